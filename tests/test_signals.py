"""SIGTERM (what `timeout`, systemd and Task Scheduler send) during a save: the previous file stays, no temporary
files are left, and the command ends with 143 and one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# The child stands for a slow disk: its fsync announces itself and then waits, so that the signal arrives while
# the temporary file is written and not yet in place. Everything else is the real command.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    def slow_fsync(descriptor):
        print("saving", file=sys.stderr, flush=True)
        time.sleep(60)
    os.fsync = slow_fsync
    from ccoptout_xl.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize(
    ("argv", "name"),
    [(["report", "--demo", "--latest", "300"], "r.xlsx"), (["fetch", "--demo", "--format", "csv"], "r.csv")],
)
def test_sigterm_during_a_save_keeps_the_old_file_and_leaves_no_temporary_file(
    tmp_path: Path, argv: list[str], name: str
) -> None:
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    scratch.mkdir()
    target = out / name
    target.write_bytes(b"the previous file")
    env = os.environ | {"TMPDIR": str(scratch)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *argv, "-o", str(target)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stderr is not None
        assert child.stderr.readline().strip() == "saving"
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 143
    assert err.count("\n") == 1 and "stopped" in err and "Traceback" not in err
    assert target.read_bytes() == b"the previous file"
    assert sorted(p.name for p in out.iterdir()) == [name]
    assert list(scratch.iterdir()) == []  # openpyxl's and ours
