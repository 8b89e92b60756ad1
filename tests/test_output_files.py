"""Output files (``-o``) under hostile conditions: links, FIFOs, devices, folders, and a really full disk.

The full-disk tests run the command on a small tmpfs mounted in a private mount namespace (``unshare``), so the
disk is really full, as it would be in use; they are skipped only where no namespace can be made.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccoptout_xl.cli import main
from ccoptout_xl.sandbox import Sandbox

from .conftest import truth

# Mounts a tmpfs of $size on $disk, copies $seed into it, fills it up until $leave KiB are free, runs the command
# $times times, then copies what is left on the disk to $out (the mount goes away with the namespace).
SMALL_DISK = r"""
set -e
disk=$1; seed=$2; out=$3; size=$4; leave=$5; times=$6; shift 6
mount -t tmpfs -o "size=$size" tmpfs "$disk"
cp -a "$seed"/. "$disk"/
avail=$(df -Pk "$disk" | awk 'NR == 2 { print $4 }')
if [ "$avail" -gt "$leave" ]; then
    head -c $(( (avail - leave) * 1024 )) /dev/zero > "$disk/.filler" 2>/dev/null || true
fi
set +e
while [ "$times" -gt 0 ]; do "$@"; code=$?; times=$((times - 1)); done
rm -f "$disk/.filler"
cp -a "$disk"/. "$out"/
exit $code
"""


@functools.cache
def namespace() -> tuple[str, ...] | None:
    """How to get a private mount namespace here: as any user with a user namespace, or as root without."""
    for prefix in (("unshare", "-Urm"), ("unshare", "-m")):
        with tempfile.TemporaryDirectory() as folder:
            try:
                probe = subprocess.run(
                    [*prefix, "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$1"', "sh", folder],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
            except (OSError, subprocess.SubprocessError):
                continue
            if probe.returncode == 0:
                return prefix
    return None


def in_namespace(*command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a private mount namespace (skip the test, saying why, where none can be made)."""
    prefix = namespace()
    if prefix is None:
        pytest.skip("no private mount namespace here (unshare -Urm / unshare -m), so no real full disk to test on")
    return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=300, check=False)


def on_small_disk(
    disk: Path, seed: Path, *argv: str, size_kb: int = 512, free_kb: int = 0, times: int = 1
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run ``ccoptout-xl argv`` (``times`` times) with a full tmpfs mounted on ``disk`` holding a copy of ``seed``
    and ``free_kb`` KiB free; return the run (the last exit code) and a folder holding what the disk held
    afterwards."""
    disk.mkdir(exist_ok=True)
    after = disk.with_name(disk.name + "-after")
    after.mkdir()
    command = [sys.executable, "-m", "ccoptout_xl", *argv]
    script = ["sh", "-c", SMALL_DISK, "sh", str(disk), str(seed), str(after), f"{size_kb}k", str(free_kb), str(times)]
    return in_namespace(*script, *command), after


def one_line(text: str) -> str:
    """The command's message: exactly one line, never a traceback."""
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert text.count("\n") == 1, text
    return text


@pytest.fixture
def api(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Sandbox]:
    monkeypatch.setenv("CCOPTOUT_API_URL", sandbox.base_url)
    monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", sandbox.token)
    monkeypatch.setenv("CCOPTOUT_CACHE_DIR", str(tmp_path / "cache"))
    sandbox.reset_log()
    yield sandbox


def api_calls(sandbox: Sandbox) -> int:
    return sum(r.path.startswith("/v3/") for r in sandbox.requests)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


# -- links ------------------------------------------------------------------------------------------------------


def test_a_link_is_written_through_and_stays_a_link(api: Sandbox, capsys, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    target = real / "optouts.csv"
    target.write_text("the previous export\n", encoding="utf-8")
    links = tmp_path / "links"
    links.mkdir()
    (links / "first.csv").symlink_to(Path("..") / "real" / "optouts.csv")  # relative
    (links / "second.csv").symlink_to(links / "first.csv")  # a link to a link
    code, err = run(capsys, "fetch", "--no-cache", "--format", "csv", "-o", str(links / "second.csv"))
    assert code == 0, err
    assert os.readlink(links / "second.csv") == str(links / "first.csv")
    assert os.readlink(links / "first.csv") == str(Path("..") / "real" / "optouts.csv")
    rows = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8-sig"), newline="")))
    assert rows[0][0] == "contact_id" and len(rows) == 1 + len(truth(api))
    assert sorted(p.name for p in links.iterdir()) == ["first.csv", "second.csv"]
    assert [p.name for p in real.iterdir()] == ["optouts.csv"]  # the temporary file went beside the target


def test_a_dangling_link_gets_its_target_written(api: Sandbox, capsys, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    link = tmp_path / "optouts.json"
    link.symlink_to(tmp_path / "real" / "new.json")
    code, err = run(capsys, "fetch", "--no-cache", "--format", "json", "--latest", "3", "-o", str(link))
    assert code == 0, err
    assert link.is_symlink() and len(json.loads((tmp_path / "real" / "new.json").read_text(encoding="utf-8"))) == 3

    # A link into a folder that does not exist: bad input, found before any call.
    api.reset_log()
    nowhere = tmp_path / "nowhere.json"
    nowhere.symlink_to(tmp_path / "missing" / "new.json")
    code, err = run(capsys, "fetch", "--no-cache", "--format", "json", "-o", str(nowhere))
    assert code == 2 and str(tmp_path / "missing") in one_line(err)
    assert nowhere.is_symlink() and api_calls(api) == 0


def make_node(kind: str, path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs, sockets or device nodes here (Windows)")
    if kind == "FIFO":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()  # the socket file stays
    elif kind == "device":
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a second /dev/null
        except PermissionError:
            pytest.skip("device nodes cannot be made here (no CAP_MKNOD)")
    elif kind == "link to a FIFO":
        os.mkfifo(path.with_name("fifo"))
        path.symlink_to(path.with_name("fifo"))


@pytest.mark.parametrize("command", ["fetch", "report"])
@pytest.mark.parametrize("kind", ["FIFO", "folder", "socket", "device", "link to a FIFO"])
def test_what_is_not_a_regular_file_is_refused_before_any_call(
    api: Sandbox, capsys, tmp_path: Path, kind: str, command: str
) -> None:
    path = tmp_path / ("out.xlsx" if command == "report" else "out.csv")
    make_node(kind, path)
    before = os.lstat(path)
    code, err = run(capsys, command, "--no-cache", "-o", str(path))
    assert code == 6, err
    assert str(path) in one_line(err) and "not a regular file" in err
    assert api_calls(api) == 0
    after = os.lstat(path)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)  # the node itself, untouched
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="no /proc/self/fd here")
def test_standard_output_as_a_file_is_refused(api: Sandbox, tmp_path: Path) -> None:
    # `-o /dev/stdout`, without touching the real /dev/stdout: a link to this process's own standard output,
    # which is a pipe. It used to be replaced by a regular file (and /dev/stdout itself, as root).
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    done = subprocess.run(
        [sys.executable, "-m", "ccoptout_xl", "fetch", "--no-cache", "--format", "json", "-o", str(link)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 6, done.stderr
    assert str(link) in one_line(done.stderr) and "FIFO" in done.stderr
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
    assert api_calls(api) == 0


def test_a_loop_of_links_is_refused(api: Sandbox, capsys, tmp_path: Path) -> None:
    (tmp_path / "a.csv").symlink_to(tmp_path / "b.csv")
    (tmp_path / "b.csv").symlink_to(tmp_path / "a.csv")
    code, err = run(capsys, "fetch", "--no-cache", "-o", str(tmp_path / "a.csv"))
    assert code == 6 and str(tmp_path / "a.csv") in one_line(err)
    assert api_calls(api) == 0 and (tmp_path / "a.csv").is_symlink()


# -- a full disk ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("optouts.csv", ["fetch", "--format", "csv"]),
        ("optouts.json", ["fetch", "--format", "json"]),
        ("optouts.xlsx", ["report"]),
    ],
)
def test_a_full_disk_leaves_the_existing_file_as_it_was(api: Sandbox, tmp_path: Path, name: str, argv) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    previous = os.urandom(40_000)  # incompressible: it really takes the space
    (seed / name).write_bytes(previous)
    disk = tmp_path / "disk"
    done, after = on_small_disk(disk, seed, *argv, "--no-cache", "-o", str(disk / name), free_kb=8)
    assert done.returncode == 6, done.stderr
    message = one_line(done.stderr)
    assert str(disk / name) in message and "the disk is full" in message
    assert "the existing file was left as it was" in message
    assert sorted(p.name for p in after.iterdir()) == [name]  # no temporary file left behind
    assert (after / name).read_bytes() == previous


def test_a_full_disk_for_a_new_file_says_nothing_was_written(api: Sandbox, tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    disk = tmp_path / "disk"
    done, after = on_small_disk(disk, seed, "fetch", "--no-cache", "--format", "csv", "-o", str(disk / "new.csv"))
    assert done.returncode == 6, done.stderr
    assert str(disk / "new.csv") in one_line(done.stderr) and "nothing was written" in done.stderr
    assert list(after.iterdir()) == []


def test_a_full_temporary_folder_is_exit_6_and_names_it(
    api: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    disk = tmp_path / "disk"
    target = tmp_path / "report.xlsx"
    target.write_bytes(b"the previous report")
    monkeypatch.setenv("TMPDIR", str(disk))  # where openpyxl stages the sheets' rows
    done, after = on_small_disk(disk, seed, "report", "--no-cache", "-o", str(target), free_kb=4)
    assert done.returncode == 6, done.stderr
    assert f"The temporary folder {disk} is full" in one_line(done.stderr)
    assert target.read_bytes() == b"the previous report"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []
    assert list(after.iterdir()) == []
