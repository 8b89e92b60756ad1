"""The ``ccoptout-xl`` command: output formats, bad input, exit codes, files, the demo."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ccoptout_xl.cli import main
from ccoptout_xl.formats import FIELDS
from ccoptout_xl.sandbox import Sandbox

from .conftest import truth


@pytest.fixture
def api(shared_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    monkeypatch.setenv("CCOPTOUT_API_URL", shared_sandbox.base_url)
    monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", shared_sandbox.token)
    return shared_sandbox


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_exactly_the_documented_keys_and_is_never_altered(api: Sandbox, capsys) -> None:
    code, out, err = run_cli(capsys, "fetch", "--format", "json", "--tz", "America/New_York")
    assert code == 0, err
    records = json.loads(out)
    expected = truth(api)
    assert [r["contact_id"] for r in records] == [o.contact_id for o in expected]
    assert all(tuple(r) == FIELDS for r in records)
    reasons = {o.opt_out_reason for o in expected}
    assert any(r and r.startswith("=") for r in reasons)
    assert {r["opt_out_reason"] for r in records} == reasons  # formula-looking text left exactly as it was
    assert all(r["opt_out_date"].endswith(("-05:00", "-04:00")) for r in records)


def test_csv_neutralises_formulas_unless_raw(api: Sandbox, capsys) -> None:
    code, out, _ = run_cli(capsys, "fetch", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert tuple(rows[0]) == FIELDS and len(rows) == len(truth(api))
    dangerous = ("=", "+", "-", "@", "\t", "\r")
    for row in rows:
        for value in row.values():
            assert not value.startswith(dangerous), value
    assert any(row["opt_out_reason"].startswith("'=") for row in rows)

    code, out, _ = run_cli(capsys, "fetch", "--format", "csv", "--raw")
    raw_rows = list(csv.DictReader(io.StringIO(out)))
    assert any(row["opt_out_reason"].startswith("=") for row in raw_rows)


def test_table_output_and_latest(api: Sandbox, capsys) -> None:
    code, out, _ = run_cli(capsys, "fetch", "--latest", "5", "--tz", "UTC")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Opted out") and lines[-1] == "5 opt-outs"
    newest = truth(api)[0]
    assert newest.email in lines[2] or newest.email[:30] in lines[2]


def test_csv_file_has_a_byte_order_mark_for_excel(api: Sandbox, capsys, tmp_path: Path) -> None:
    target = tmp_path / "optouts.csv"
    code, _, _ = run_cli(capsys, "fetch", "--format", "csv", "-o", str(target))
    assert code == 0
    data = target.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfcontact_id,") and b"\r\n" in data and b"\r\r\n" not in data
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert len(rows) == len(truth(api))


def test_output_file_is_written_and_summarised(api: Sandbox, capsys, tmp_path: Path) -> None:
    target = tmp_path / "optouts.json"
    code, out, err = run_cli(capsys, "fetch", "--since", "90d", "--format", "json", "-o", str(target))
    assert code == 0 and out == ""
    assert err.startswith("Wrote ") and str(target) in err
    assert isinstance(json.loads(target.read_text(encoding="utf-8")), list)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["fetch", "--since", "someday"], "--since date 'someday'"),
        (["fetch", "--until", "2026-13-40"], "--until date"),
        (["fetch", "--since", "2026-02-01", "--until", "2026-01-01"], "must be before the until date"),
        (["fetch", "--latest", "0"], "--latest"),
        (["fetch", "--latest", "many"], "--latest"),
        (["fetch", "--latest", "99999999999999999999"], "--latest must be a whole number from 1 to 10,000,000"),
        (["fetch", "--since", "99999999d"], "out of range"),
        (["fetch", "--since", "30"], "write 30d"),
        (["fetch", "--tz", "Mars/Olympus"], "Unknown time zone"),
        (["fetch", "--format", "xml"], "--format"),
        (["fetch", "--colour"], "unrecognized arguments"),
        (["fetch", "-o", "/no/such/folder/out.csv"], "does not exist"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(api: Sandbox, capsys, argv: list[str], needle: str) -> None:
    api.reset_log()
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert api.requests == []  # nothing spent on the API


def test_plain_http_api_url_is_refused(api: Sandbox, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CCOPTOUT_API_URL", "http://api.example.com/v3")
    code, _, err = run_cli(capsys, "fetch")
    assert code == 2 and "Refusing plain-HTTP" in err and err.count("\n") == 1


def test_bad_rate_limit_setting(api: Sandbox, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CCOPTOUT_RATE_LIMIT", "fast")
    code, _, err = run_cli(capsys, "fetch")
    assert code == 2 and "CCOPTOUT_RATE_LIMIT" in err and err.count("\n") == 1


def test_a_proxy_setting_never_sees_loopback_traffic(api: Sandbox, capsys, monkeypatch) -> None:
    # Plain HTTP is allowed only to this computer; a proxy would carry the token across the network in clear.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there: using it would fail
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    code, out, err = run_cli(capsys, "fetch", "--latest", "2", "--format", "json")
    assert code == 0, err
    assert len(json.loads(out)) == 2


def test_not_signed_in_is_exit_7(api: Sandbox, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CCOPTOUT_ACCESS_TOKEN")
    code, _, err = run_cli(capsys, "fetch")
    assert code == 7 and "ccoptout-xl login" in err and "CCOPTOUT_ACCESS_TOKEN" in err and err.count("\n") == 1


def test_rejected_token_is_exit_4_and_not_echoed(api: Sandbox, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", "wrong-token-abc")
    code, out, err = run_cli(capsys, "fetch")
    assert code == 4 and "HTTP 401" in err and "wrong-token-abc" not in err + out


def test_api_failures_have_their_own_exit_codes(sandbox: Sandbox, capsys, monkeypatch, tmp_path: Path) -> None:
    from ccoptout_xl.sandbox import Fault

    monkeypatch.setenv("CCOPTOUT_API_URL", sandbox.base_url)
    monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", sandbox.token)
    sandbox.faults.add(Fault(kind="malformed", at_request=1))
    code, _, err = run_cli(capsys, "fetch")
    assert code == 3 and "not valid JSON" in err and err.count("\n") == 1

    # Quota used up midway: exit 5, and the existing output file is left exactly as it was.
    target = tmp_path / "optouts.csv"
    target.write_text("previous report\n", encoding="utf-8")
    sandbox.faults.clear()
    sandbox.reset_log()
    sandbox.daily_quota = 1
    code, _, err = run_cli(capsys, "fetch", "--format", "csv", "-o", str(target))
    assert code == 5 and "00:00 UTC" in err
    assert target.read_text(encoding="utf-8") == "previous report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optouts.csv"]  # no temporary file left behind


def run_command(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ccoptout_xl", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_demo_runs_against_the_built_in_sandbox() -> None:
    done = run_command("fetch", "--demo", "--latest", "3", "--format", "json")
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert len(records) == 3 and all(tuple(r) == FIELDS for r in records)
    assert done.stderr == ""  # no progress bar when stderr is not a terminal


def test_progress_bar_only_on_a_terminal(api: Sandbox) -> None:
    pty = pytest.importorskip("pty")
    fcntl, termios = pytest.importorskip("fcntl"), pytest.importorskip("termios")
    leader, follower = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, and a bar 0 columns wide is empty: make it 100x30.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    chunks: list[bytes] = []

    def read_terminal() -> None:  # must drain while the process runs: the buffer is gone once it exits
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    env = {**os.environ, "CCOPTOUT_API_URL": api.base_url, "CCOPTOUT_ACCESS_TOKEN": api.token}
    with subprocess.Popen(
        [sys.executable, "-m", "ccoptout_xl", "fetch", "--format", "csv", "--refresh"],
        stdout=subprocess.PIPE,
        stderr=follower,
        env=env,
    ) as process:
        os.close(follower)
        stdout, _ = process.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(leader)
    terminal = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0
    assert "contacts" in terminal and "pages" in terminal
    assert stdout.startswith(b"contact_id,")


def test_sandbox_command_prints_its_address_and_token_and_serves() -> None:
    import requests
    from dateutil.parser import isoparse

    command = [sys.executable, "-m", "ccoptout_xl", "sandbox", "--port", "0", "--contacts", "300", "--seed", "4"]
    command += ["--listing", "scrambled"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        try:
            lines = [process.stdout.readline() for _ in range(2)]
            base_url = lines[0].split(":", 1)[1].strip()
            token = lines[1].split(":", 1)[1].strip()
            assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v3")
            answer = requests.get(
                f"{base_url}/contacts/counts", headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
            assert answer.status_code == 200 and answer.json()["total"] > 0
            page = requests.get(
                f"{base_url}/contacts", params={"limit": 100}, headers={"Authorization": f"Bearer {token}"}, timeout=10
            ).json()["contacts"]
            created = [isoparse(contact["created_at"]) for contact in page]
            assert len(created) == 100 and created != sorted(created)  # --listing scrambled: not in creation order
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.mark.parametrize("text", ["=1+1", "+1 555", "-2", "@SUM(A1)", "\t=1", "\r=1", " =1+1", "\u200b=1+1", "\n=cmd"])
def test_neutralise_anything_a_spreadsheet_could_run(text: str) -> None:
    from ccoptout_xl.formats import neutralise

    assert neutralise(text) == "'" + text
    assert neutralise("plain " + text) == "plain " + text
