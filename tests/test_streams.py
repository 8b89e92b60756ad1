"""Standard output that cannot take the text: another encoding, closed, or closed early by the reader."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ccoptout_xl.sandbox import Sandbox

from .conftest import truth


@pytest.fixture
def env(shared_sandbox: Sandbox) -> Iterator[dict[str, str]]:
    yield os.environ | {
        "CCOPTOUT_API_URL": shared_sandbox.base_url,
        "CCOPTOUT_ACCESS_TOKEN": shared_sandbox.token,
    }


def _run(env: dict[str, str], *argv: str, encoding: str | None = None, shell: str | None = None):
    if encoding:
        env = env | {"PYTHONIOENCODING": encoding}
    command = [sys.executable, "-m", "ccoptout_xl", *argv]
    if shell:
        command = ["sh", "-c", f'exec "$0" "$@" {shell}', *command]
    return subprocess.run(command, env=env, capture_output=True, timeout=120)


@pytest.mark.parametrize("encoding", ["cp1252", "ascii", "latin-1"])
def test_json_to_a_console_in_another_encoding_is_still_exactly_the_data(
    env: dict[str, str], shared_sandbox: Sandbox, encoding: str
) -> None:
    done = _run(env, "fetch", "--no-cache", "--format", "json", "--tz", "UTC", encoding=encoding)
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout.decode(encoding))
    expected = truth(shared_sandbox)
    assert [(r["email"], r["first_name"], r["last_name"]) for r in records] == [
        (o.email, o.first_name, o.last_name) for o in expected
    ]
    assert any(not (o.first_name + o.last_name).isascii() for o in expected)  # the case that used to fail


@pytest.mark.parametrize("fmt", ["table", "csv"])
@pytest.mark.parametrize("encoding", ["cp1252", "ascii"])
def test_table_and_csv_replace_what_the_console_cannot_show(env: dict[str, str], fmt: str, encoding: str) -> None:
    done = _run(env, "fetch", "--no-cache", "--format", fmt, encoding=encoding)
    assert done.returncode == 0, done.stderr
    assert b"?" in done.stdout and done.stderr == b""
    done.stdout.decode(encoding)  # every byte is the console's own encoding


def test_a_closed_stdout_is_one_line_and_exit_6(env: dict[str, str], shared_sandbox: Sandbox) -> None:
    shared_sandbox.reset_log()
    done = _run(env, "fetch", "--no-cache", shell=">&-")
    assert done.returncode == 6
    err = done.stderr.decode()
    assert err.count("\n") == 1 and "Standard output is closed" in err and "Traceback" not in err
    assert list(shared_sandbox.requests) == []  # refused before any API call


def test_a_reader_that_stops_early_ends_quietly(env: dict[str, str]) -> None:
    done = _run(env, "fetch", "--no-cache", "--format", "csv", shell="| head -c 100 >/dev/null")
    assert done.returncode == 0
    assert done.stderr == b""  # no 'Exception ignored', no traceback, no address


def test_messages_never_carry_an_address_when_stdout_fails(env: dict[str, str], shared_sandbox: Sandbox) -> None:
    done = _run(env, "fetch", "--no-cache", "--format", "table", shell=">/dev/full")
    assert done.returncode == 6 and done.stderr.decode().count("\n") == 1
    assert "@" not in done.stderr.decode() and "Traceback" not in done.stderr.decode()


def test_a_closed_stderr_leaves_the_output_alone(env: dict[str, str], shared_sandbox: Sandbox) -> None:
    done = _run(env, "fetch", "--no-cache", "--format", "csv", shell="2>&-")
    assert done.returncode == 0
    rows = list(csv.reader(io.StringIO(done.stdout.decode("utf-8"), newline="")))
    assert rows[0][0] == "contact_id" and len(rows) == 1 + len(truth(shared_sandbox))
