"""The bad-input table: every option, setting and file a user can get wrong, one row each.

A row says what is given (arguments, environment, files) and what must come back: the exit code and a fragment
of the one-line message. Every row also checks what holds for all of them: no traceback, no "unexpected error",
no token text and no person's address in the output, nothing fetched when the input is refused (exit 2), and
every file that existed before (an earlier report, the sign-in, the store) still there, byte for byte (a damaged
file may only have been moved aside, intact).

To add a case, add a row to the list its kind builds; ``python -m pytest tests/test_bad_input.py -k NAME`` runs
one. ``docs/reliability.md`` gives the counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ccoptout_xl.cli import main
from ccoptout_xl.credentials import Tokens
from ccoptout_xl.sandbox import Sandbox

from .conftest import truth

TOKEN_MODE = "token"  # CCOPTOUT_ACCESS_TOKEN is the sandbox's token
SIGNED_IN = "signed-in"  # a stored sign-in (tokens.json) with the sandbox's authorization server


@dataclass
class World:
    """One case's folders: config (config.ini, tokens.json), cache (the store), work (outputs, the cwd)."""

    root: Path
    sandbox: Sandbox
    tokens: Tokens

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def write(self, relative: str, content: bytes | str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode("utf-8")
        path.write_bytes(content)
        return path


Setup = Callable[[World], None]


@dataclass
class Case:
    name: str
    argv: list[str]
    code: int
    needle: str  # a fragment of the message (stderr), case-insensitive
    env: dict[str, str | None] = field(default_factory=dict)
    setup: Setup | None = None
    mode: str = TOKEN_MODE
    moved: tuple[str, ...] = ()  # files (relative to the world) that may be moved aside, intact

    def __str__(self) -> str:
        return self.name


# -- the rows ----------------------------------------------------------------------------------------------

QUERY_COMMANDS = (["fetch"], ["report"])

BAD_DATES = [
    ("empty", "", "empty"),
    ("blank", "   ", "empty"),
    ("word", "someday", "cannot read"),
    ("two-digit-number", "30", "write 30d"),
    ("one-digit-number", "7", "write 7d"),
    ("three-digit-number", "365", "write 365d"),
    ("five-digit-number", "20265", "only a number"),
    ("year-999", "0999-01-01", "out of range"),
    ("year-1899", "1899-12-31", "out of range"),
    ("year-1", "0001-01-01", "out of range"),
    ("month-13", "2026-13-01", "cannot read"),
    ("feb-30", "2026-02-30", "cannot read"),
    ("hour-25", "2026-05-01T25:00", "cannot read"),
    ("offset-99h", "2026-05-01T09:30+99:00", "offset"),
    ("offset-25h", "2026-05-01T09:30+25:00", "offset"),
    ("fullwidth-digits", "２０２６-05-01", "another script"),
    ("arabic-digits", "٢٠٢٦-05-01", "another script"),
    ("huge-age", "99999999d", "out of range"),
    ("absurd-age", "9" * 30 + "d", "out of range"),
    ("exponent", "1e9", "cannot read"),
    ("negative-age", "-5d", "expected one argument"),  # argparse reads it as an option
    ("very-long", "2026-05-01" * 500, "too long"),
    ("escape-sequence", "2026-05-01\x1b[31m", "control characters"),
    ("two-years", "May 2026 2027", "cannot read"),
    ("newline", "2026-05-01\n2026-06-01", "control characters"),
    ("posix-utc-offset", "2026-05-01 10:00 UTC+3", "reads two ways"),
    ("posix-gmt-offset", "2026-05-01 10:00 GMT-5", "reads two ways"),
    ("year-0001", "0001", "out of range"),
    ("year-0030", "0030", "out of range"),
    ("decimal-number", "3.5", "only a number"),
]


def date_rows() -> Iterator[Case]:
    for command in QUERY_COMMANDS:
        for option in ("--since", "--until"):
            for name, value, needle in BAD_DATES:
                yield Case(f"{command[0]}{option}-{name}", [*command, option, value], 2, needle)
    for command in QUERY_COMMANDS:
        yield Case(
            f"{command[0]}-since-after-until", [*command, "--since", "2026-02-01", "--until", "2026-01-01"], 2, "before"
        )
        yield Case(f"{command[0]}-since-missing-value", [*command, "--since"], 2, "expected one argument")
        yield Case(f"{command[0]}-since-negative-age-joined", [*command, "--since=-5d"], 2, "cannot read")
        yield Case(
            f"{command[0]}-date-past-9999-in-zone",
            [*command, "--since", "9999-12-31T23:59", "--tz", "America/Adak"],
            2,
            "out of range",
        )


BAD_ZONES = [
    ("empty", "", "empty"),
    ("blank", " ", "empty"),
    ("folder", "Europe", "unknown time zone"),
    ("folder-slash", "Europe/", "unknown time zone"),
    ("unknown", "Mars/Olympus", "unknown time zone"),
    ("traversal", "../../etc/passwd", "unknown time zone"),
    ("absolute-path", "/etc/localtime", "unknown time zone"),
    ("very-long", "x" * 5000, "too long"),
    ("escape", "America/New_York\x1b", "control characters"),
    ("offset-text", "UTC+5", "unknown time zone"),
    ("data-file", "zone.tab", "unknown time zone"),
]


def zone_rows() -> Iterator[Case]:
    for command in ([*c] for c in (*QUERY_COMMANDS, ["demo"])):
        for name, value, needle in BAD_ZONES:
            yield Case(f"{command[0]}--tz-{name}", [*command, "--tz", value], 2, needle)


BAD_COUNTS = [
    ("zero", "0", "must be"),
    ("negative", "-1", "must be"),
    ("word", "many", "not a whole number"),
    ("fraction", "1.5", "not a whole number"),
    ("exponent", "1e3", "not a whole number"),
    ("empty", "", "not a whole number"),
    ("fullwidth", "５", "not a whole number"),
    ("thousands-of-digits", "9" * 5000, "far too large"),
]


def number_rows() -> Iterator[Case]:
    for command in QUERY_COMMANDS:
        for name, value, needle in BAD_COUNTS:
            yield Case(f"{command[0]}--latest-{name}", [*command, "--latest", value], 2, needle)
            yield Case(f"{command[0]}--max-age-{name}", [*command, "--max-age", value], 2, needle)
        yield Case(
            f"{command[0]}--latest-beyond-any-account", [*command, "--latest", "99999999999999999999"], 2, "--latest"
        )
        yield Case(f"{command[0]}--max-age-beyond-a-year", [*command, "--max-age", "999999999"], 2, "--max-age")


def output_rows() -> Iterator[Case]:
    for command in (["fetch", "--format", "csv"], ["report"], ["demo"]):
        yield Case(f"{command[0]}-o-empty", [*command, "-o", ""], 2, "empty")
        yield Case(f"{command[0]}-o-missing-folder", [*command, "-o", "/no/such/folder/out.xlsx"], 2, "does not exist")
        yield Case(f"{command[0]}-o-folder-is-a-file", [*command, "-o", "existing.csv/out.xlsx"], 2, "does not exist")
        slash = "names a folder" if command[0] == "fetch" else ".xlsx"  # the report's name is checked first
        yield Case(f"{command[0]}-o-trailing-slash-new", [*command, "-o", "newdir/"], 2, slash)
        yield Case(f"{command[0]}-o-trailing-slash-file", [*command, "-o", "existing.csv/"], 2, slash)
    yield Case("report-o-not-xlsx", ["report", "-o", "out.csv"], 2, ".xlsx")
    yield Case("report-o-xlsm", ["report", "-o", "out.xlsm"], 2, ".xlsx")
    yield Case("demo-o-not-xlsx", ["demo", "-o", "out.txt"], 2, ".xlsx")
    yield Case("fetch-format-xml", ["fetch", "--format", "xml"], 2, "--format")
    yield Case("fetch-format-empty", ["fetch", "--format", ""], 2, "--format")
    yield Case("fetch-format-upper", ["fetch", "--format", "JSON"], 2, "--format")
    yield Case("workbook-dest-empty", ["workbook", "--dest", ""], 2, "empty")
    yield Case("workbook-dest-xlsx", ["workbook", "--dest", "book.xlsx"], 2, ".xlsm")
    yield Case("workbook-dest-missing-folder", ["workbook", "--dest", "/no/such/OptOuts.xlsm"], 2, "does not exist")


def usage_rows() -> Iterator[Case]:
    yield Case("no-command", [], 2, "required")
    yield Case("unknown-command", ["nosuch"], 2, "invalid choice")
    yield Case("unknown-option", ["fetch", "--colour"], 2, "unrecognized arguments")
    yield Case("cache-without-action", ["cache"], 2, "required")
    yield Case("cache-unknown-action", ["cache", "wipe"], 2, "invalid choice")
    yield Case("sync-unknown-option", ["sync", "--fast"], 2, "unrecognized arguments")
    yield Case("login-extra-argument", ["login", "now"], 2, "unrecognized arguments")
    yield Case("report-format-option", ["report", "--format", "csv"], 2, "unrecognized arguments")


BAD_URLS = [
    ("plain-http-remote", "http://api.example.com/v3", "plain-http"),
    ("ftp", "ftp://api.example.com/v3", "not an http(s) url"),
    ("no-scheme", "api.cc.email/v3", "not an http(s) url"),
    ("port-too-big", "http://127.0.0.1:99999/v3", "invalid host or port"),
    ("port-word", "http://127.0.0.1:abc/v3", "host and port"),
    ("port-zero", "http://127.0.0.1:0/v3", "port 0"),
    ("broken-ipv6", "http://[::1/v3", "invalid host or port"),
    ("userinfo", "http://user:pw@127.0.0.1:8800/v3", "host and port"),
    ("backslash-authority", "http://evil.example\\@127.0.0.1:8800/v3", "host and port"),
    ("backslash-port", "http://evil.example:80\\@127.0.0.1:8800/v3", "host and port"),
    ("percent-host", "http://127.0.0.1%2f@evil.example/v3", "host and port"),
    ("query", "https://api.cc.email/v3?x=1", "query or fragment"),
    ("fragment", "https://api.cc.email/v3#x", "query or fragment"),
    ("space", "http://127.0.0.1 :8800/v3", "not a usable url"),
    ("very-long", "https://api.cc.email/" + "v" * 3000, "not a usable url"),
    ("decimal-loopback-lookalike", "http://2130706433/v3", "plain-http"),
    ("localhost-dot", "http://localhost./v3", "host and port"),
]


def api_url_rows() -> Iterator[Case]:
    for name, value, needle in BAD_URLS:
        for command in (["fetch"], ["sync"]):
            yield Case(f"CCOPTOUT_API_URL-{name}-{command[0]}", command, 2, needle, env={"CCOPTOUT_API_URL": value})


def auth_url_rows() -> Iterator[Case]:
    for name, value, needle in BAD_URLS:
        yield Case(f"CCOPTOUT_AUTH_URL-{name}", ["fetch"], 2, needle, env={"CCOPTOUT_AUTH_URL": value}, mode=SIGNED_IN)
    for name, value in [
        ("https", "https://example.com/callback"),
        ("remote-http", "http://example.com/callback"),
        ("backslash", "http://evil.example\\@127.0.0.1:8765/callback"),
        ("bad-port", "http://127.0.0.1:99999/callback"),
        ("userinfo", "http://me@127.0.0.1:8765/callback"),
    ]:
        yield Case(
            f"CCOPTOUT_REDIRECT_URI-{name}",
            ["login", "--browser", "--no-open"],
            2,
            "redirect",
            env={"CCOPTOUT_REDIRECT_URI": value},
            mode=SIGNED_IN,
        )


def _token_rows(world_token: str = "{token}") -> list[tuple[str, str, int, str]]:
    return [
        ("line-break", "{head}\n{tail}", 2, "not an access token"),
        ("crlf", "{head}\r\n{tail}", 2, "not an access token"),
        ("space", "{head} {tail}", 2, "not an access token"),
        ("tab", "{head}\t{tail}", 2, "not an access token"),
        ("quote", '{head}"{tail}', 2, "not an access token"),
        ("accent", "{head}é{tail}", 2, "not an access token"),
        ("bearer-prefix", "Bearer {head}{tail}", 2, "not an access token"),
        ("megabyte", "a" * 1_000_000, 2, "not an access token"),
        ("blank", "   ", 7, "not signed in"),
    ]


def access_token_rows() -> Iterator[Case]:
    for command in (["fetch"], ["sync"], ["report"]):
        for name, template, code, needle in _token_rows():
            yield Case(
                f"CCOPTOUT_ACCESS_TOKEN-{name}-{command[0]}",
                command,
                code,
                needle,
                env={"CCOPTOUT_ACCESS_TOKEN": template},
            )


def changes_rows() -> Iterator[Case]:
    yield Case("changes-without-since", ["changes"], 2, "--since")
    yield Case("changes-since-missing-value", ["changes", "--since"], 2, "expected one argument")
    for name, value, needle in BAD_DATES:
        yield Case(f"changes--since-{name}", ["changes", "--since", value], 2, needle)
        yield Case(f"changes--until-{name}", ["changes", "--since", "2026-01-01", "--until", value], 2, needle)
    yield Case("changes-since-after-until", ["changes", "--since", "2026-02-01", "--until", "2026-01-01"], 2, "before")
    for name, value, needle in BAD_ZONES:
        yield Case(f"changes--tz-{name}", ["changes", "--since", "2026-01-01", "--tz", value], 2, needle)
    yield Case("changes-no-cache", ["changes", "--since", "2026-01-01", "--no-cache"], 2, "unrecognized arguments")
    yield Case("changes-latest", ["changes", "--since", "2026-01-01", "--latest", "5"], 2, "unrecognized arguments")
    yield Case("changes-format-xml", ["changes", "--since", "2026-01-01", "--format", "xml"], 2, "--format")
    yield Case("changes-o-empty", ["changes", "--since", "2026-01-01", "-o", ""], 2, "empty")
    yield Case(
        "changes-o-missing-folder", ["changes", "--since", "2026-01-01", "-o", "/no/such/c.csv"], 2, "does not exist"
    )
    for name, value, needle in BAD_COUNTS:
        yield Case(f"changes--max-age-{name}", ["changes", "--since", "2026-01-01", "--max-age", value], 2, needle)


def campaigns_rows() -> Iterator[Case]:
    for option in ("--since", "--until"):
        for name, value, needle in BAD_DATES:
            yield Case(f"campaigns{option}-{name}", ["campaigns", option, value], 2, needle)
    yield Case(
        "campaigns-since-after-until", ["campaigns", "--since", "2026-02-01", "--until", "2026-01-01"], 2, "before"
    )
    for name, value, needle in BAD_ZONES:
        yield Case(f"campaigns--tz-{name}", ["campaigns", "--tz", value], 2, needle)
    yield Case("campaigns-latest", ["campaigns", "--latest", "5"], 2, "unrecognized arguments")
    yield Case("campaigns-format-xml", ["campaigns", "--format", "xml"], 2, "--format")
    yield Case("campaigns-o-empty", ["campaigns", "-o", ""], 2, "empty")
    yield Case("campaigns-o-missing-folder", ["campaigns", "-o", "/no/such/c.csv"], 2, "does not exist")
    yield Case("fetch-campaigns-with-a-value", ["fetch", "--campaigns=yes"], 2, "ignored explicit argument")
    yield Case("report-campaigns-not-xlsx", ["report", "--campaigns", "-o", "out.csv"], 2, ".xlsx")
    # The shared sandbox's token has no campaign_data permission: one line, the exit code of a refused permission.
    yield Case("fetch-campaigns-without-permission", ["fetch", "--campaigns", "--latest", "3"], 4, "ccoptout-xl login")
    yield Case("campaigns-without-permission", ["campaigns", "--since", "30d"], 4, "campaign_data")


def setting_rows() -> Iterator[Case]:
    for value in ("0", "0.5", "366", "-1", "abc", "nan", "inf", "７", "7 days"):
        yield Case(
            f"CCOPTOUT_FULL_SYNC_DAYS-{value}",
            ["sync"],
            2,
            "CCOPTOUT_FULL_SYNC_DAYS",
            env={"CCOPTOUT_FULL_SYNC_DAYS": value},
        )
    for value in ("0", "-1", "5", "nan", "inf", "abc", "４", "1e309", "0x4", "4 per second"):
        yield Case(
            f"CCOPTOUT_RATE_LIMIT-{value}", ["fetch"], 2, "CCOPTOUT_RATE_LIMIT", env={"CCOPTOUT_RATE_LIMIT": value}
        )
    for value in ("0", "-5", "abc", "1e3", "99999999999", "１０"):
        yield Case(
            f"CCOPTOUT_DAILY_QUOTA-{value}", ["sync"], 2, "CCOPTOUT_DAILY_QUOTA", env={"CCOPTOUT_DAILY_QUOTA": value}
        )
    for value in ("0", "1.5", "abc", "nan", "-0.5"):
        yield Case(
            f"CCOPTOUT_QUOTA_SHARE-{value}", ["sync"], 2, "CCOPTOUT_QUOTA_SHARE", env={"CCOPTOUT_QUOTA_SHARE": value}
        )
    for value in ("vault", "files", "x" * 1000):
        yield Case(
            f"CCOPTOUT_TOKEN_STORE-{value[:10]}",
            ["status"],
            2,
            "CCOPTOUT_TOKEN_STORE",
            env={"CCOPTOUT_TOKEN_STORE": value},
            mode=SIGNED_IN,
        )
    for name, value in [("space", "abc def"), ("newline", "abc\ndef"), ("very-long", "k" * 500), ("control", "a\x07b")]:
        for command in (["fetch"], ["status"], ["login", "--no-open"]):
            yield Case(
                f"CCOPTOUT_CLIENT_ID-{name}-{command[0]}",
                command,
                2,
                "client id",
                env={"CCOPTOUT_CLIENT_ID": value},
                mode=SIGNED_IN,
            )
    for name, value in [("newline", "abc\ndef"), ("space-inside", "abc def")]:
        yield Case(
            f"CCOPTOUT_CLIENT_SECRET-{name}",
            ["status"],
            2,
            "client secret",
            env={"CCOPTOUT_CLIENT_SECRET": value},
            mode=SIGNED_IN,
        )
    yield Case(
        "CCOPTOUT_CONFIG_DIR-is-a-file",
        ["status"],
        2,
        "config.ini",
        env={"CCOPTOUT_CONFIG_DIR": "{work}/existing.csv"},
        mode=SIGNED_IN,
    )


def config_rows() -> Iterator[Case]:
    def config(content: bytes | str) -> Setup:
        return lambda world: world.write("config/config.ini", content)

    def folder(world: World) -> None:
        (world.config / "config.ini").mkdir(parents=True)

    no_env = {"CCOPTOUT_CLIENT_ID": None, "CCOPTOUT_AUTH_URL": None}
    rows: list[tuple[str, Setup, str]] = [
        ("not-utf8", config(b"[oauth]\nclient_id = caf\xe9\n"), "not utf-8"),
        ("utf16", config("[oauth]\nclient_id = x\n".encode("utf-16")), "not utf-8"),
        ("binary", config(b"\x00\x01\x02\x03" * 100), "config.ini"),
        ("no-section-header", config("client_id = abc\n"), "section"),
        ("duplicate-section", config("[oauth]\nclient_id = a\n[oauth]\nclient_id = b\n"), "config.ini"),
        ("duplicate-key", config("[oauth]\nclient_id = a\nclient_id = b\n"), "config.ini"),
        ("is-a-folder", folder, "config.ini"),
        ("is-a-fifo", lambda world: os.mkfifo(world.config / "config.ini"), "FIFO"),
        ("client-id-with-space", config("[oauth]\nclient_id = a b\n"), "client id"),
        (
            "auth-url-plain-http",
            config("[oauth]\nclient_id = abc\nauth_url = http://example.com/oauth\n"),
            "plain-http",
        ),
        ("auth-url-backslash", config("[oauth]\nclient_id = abc\nauth_url = http://e.example\\@127.0.0.1/o\n"), "host"),
        ("auth-url-bad-port", config("[oauth]\nclient_id = abc\nauth_url = https://a.example:99999/o\n"), "port"),
        ("redirect-remote", config("[oauth]\nclient_id = abc\nredirect_uri = http://example.com/cb\n"), "redirect"),
        ("line-too-long", config("[oauth]\nclient_id = " + "c" * 10_000 + "\n"), "client id"),
    ]
    for name, setup, needle in rows:
        for command in (["status"], ["fetch"], ["logout"]):
            yield Case(f"config.ini-{name}-{command[0]}", command, 2, needle, env=no_env, setup=setup, mode=SIGNED_IN)


def percent_in_config(world: World) -> None:
    app = world.sandbox.oauth.client_id
    world.write("config/config.ini", f"[oauth]\nclient_id = {app}\nclient_secret = 50%off%(x)s\n")


def token_file_rows() -> Iterator[Case]:
    def damaged(make: Callable[[dict], bytes]) -> Setup:
        def setup(world: World) -> None:
            good = json.loads((world.config / "tokens.json").read_text(encoding="utf-8"))
            world.write("config/tokens.json", make(good))

        return setup

    def deep(good: dict) -> bytes:
        return ("[" * 100_000 + "]" * 100_000).encode()

    kinds: list[tuple[str, Callable[[dict], bytes]]] = [
        ("one-bad-byte", lambda g: json.dumps(g).encode().replace(b'"scope"', b'"sc\xffope"')),
        ("utf16", lambda g: json.dumps(g).encode("utf-16")),
        ("binary", lambda g: b"\x00\x01\x02" + g["access_token"].encode() + b"\xfe"),
        ("empty", lambda g: b""),
        ("truncated", lambda g: json.dumps(g).encode()[: len(json.dumps(g)) // 2]),
        ("a-list", lambda g: json.dumps([g]).encode()),
        ("null", lambda g: b"null"),
        ("access-number", lambda g: json.dumps(g | {"access_token": 12345}).encode()),
        ("access-null", lambda g: json.dumps(g | {"access_token": None}).encode()),
        ("access-list", lambda g: json.dumps(g | {"access_token": [g["access_token"]]}).encode()),
        ("access-missing", lambda g: json.dumps({k: v for k, v in g.items() if k != "access_token"}).encode()),
        ("access-line-break", lambda g: json.dumps(g | {"access_token": g["access_token"][:9] + "\n" + "x"}).encode()),
        ("refresh-object", lambda g: json.dumps(g | {"refresh_token": {"v": g["refresh_token"]}}).encode()),
        ("expiry-without-offset", lambda g: json.dumps(g | {"expires_at": "2026-05-01T10:00:00"}).encode()),
        ("expiry-number", lambda g: json.dumps(g | {"expires_at": 1767225600}).encode()),
        ("expiry-word", lambda g: json.dumps(g | {"expires_at": "tomorrow"}).encode()),
        ("scope-list", lambda g: json.dumps(g | {"scope": ["contact_data"]}).encode()),
        ("deep-nesting", deep),
    ]
    for name, make in kinds:
        for command in (["fetch"], ["status"], ["sync"]):
            yield Case(
                f"tokens.json-{name}-{command[0]}",
                command,
                7,
                "moved to tokens.json.damaged",
                setup=damaged(make),
                mode=SIGNED_IN,
                moved=("config/tokens.json",),
            )

    def folder(world: World) -> None:
        (world.config / "tokens.json").unlink()
        (world.config / "tokens.json").mkdir()

    yield Case("tokens.json-is-a-folder", ["fetch"], 7, "is a folder", setup=folder, mode=SIGNED_IN)

    def fifo(world: World) -> None:
        (world.config / "tokens.json").unlink()
        os.mkfifo(world.config / "tokens.json")  # reading it would wait for a writer for ever

    for command in (["fetch"], ["status"]):
        yield Case(f"tokens.json-is-a-fifo-{command[0]}", command, 7, "FIFO", setup=fifo, mode=SIGNED_IN)


def sign_in_rows() -> Iterator[Case]:
    yield Case("not-signed-in-fetch", ["fetch"], 7, "not signed in", env={"CCOPTOUT_CLIENT_ID": None}, mode=SIGNED_IN)
    yield Case(
        "no-app-login",
        ["login", "--no-open"],
        2,
        "no constant contact app",
        env={"CCOPTOUT_CLIENT_ID": None},
        mode=SIGNED_IN,
    )
    yield Case(
        "no-app-logout", ["logout"], 2, "no constant contact app", env={"CCOPTOUT_CLIENT_ID": None}, mode=SIGNED_IN
    )
    yield Case(
        "percent-in-config-secret-status",
        ["status"],
        0,
        "",
        env={"CCOPTOUT_CLIENT_ID": None},
        setup=percent_in_config,
        mode=SIGNED_IN,
    )


def _store_path(world: World) -> Path:
    from ccoptout_xl.store import account_key

    return world.cache / f"optouts-{account_key(world.sandbox.base_url, world.sandbox.token)}.sqlite3"


def target_rows() -> Iterator[Case]:
    def fifo(world: World) -> None:
        os.mkfifo(world.work / "pipe.csv")

    def folder(world: World) -> None:
        (world.work / "folder.xlsx").mkdir()

    def loop(world: World) -> None:
        (world.work / "loop.csv").symlink_to(world.work / "loop.csv")

    def device(world: World) -> None:
        # A device node of the test's own, never /dev/null: code with the defect would replace the machine's.
        try:
            os.mknod(world.work / "null-device", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("device nodes cannot be made here")

    def dangling(world: World) -> None:
        (world.work / "dangling.csv").symlink_to(world.work / "gone" / "target.csv")

    targets = [
        ("fifo", fifo, "pipe.csv", 6, "fifo"),
        ("folder", folder, "folder.xlsx", 6, "folder"),
        ("link-loop", loop, "loop.csv", 6, "loop.csv"),
        ("device", device, "null-device", 6, "a device"),
        ("dangling-link-to-missing-folder", dangling, "dangling.csv", 2, "does not exist"),
        ("name-too-long", None, "n" * 300 + ".xlsx", 6, "cannot write"),
    ]
    for name, setup, path, code, needle in targets:
        for command in (["fetch", "--format", "csv"], ["report"]):
            if command[0] == "report" and not path.endswith(".xlsx"):
                continue
            yield Case(f"{command[0]}-o-{name}", [*command, "-o", path], code, needle, setup=setup)


def store_rows() -> Iterator[Case]:
    def cache_is_a_file(world: World) -> None:
        world.cache.rmdir()
        world.write("cache", "not a folder")

    def store_is_a_folder(world: World) -> None:
        _store_path(world).mkdir(parents=True)

    def lock_is_a_folder(world: World) -> None:
        Path(str(_store_path(world)) + ".lock").mkdir(parents=True)

    def foreign(world: World) -> None:
        import sqlite3

        with sqlite3.connect(_store_path(world)) as db:
            db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
            db.execute("INSERT INTO invoices (amount) VALUES (12.5)")
        db.close()

    def garbage(world: World) -> None:
        _store_path(world).write_bytes(b"not a database at all" * 100)

    rows = [
        ("cache-folder-is-a-file", cache_is_a_file, 6, "cache"),
        ("store-is-a-folder", store_is_a_folder, 6, "folder"),
        ("lock-is-a-folder", lock_is_a_folder, 6, ".lock"),
    ]
    for name, setup, code, needle in rows:
        for command in (["fetch"], ["sync"], ["cache", "status"], ["cache", "clear"]):
            reads_only = name == "lock-is-a-folder" and command == ["cache", "status"]  # reading takes no lock
            expected = (0, "") if reads_only else (code, needle)
            yield Case(f"store-{name}-{'-'.join(command)}", command, *expected, setup=setup)
    for name, setup in [("foreign-sqlite", foreign), ("garbage", garbage)]:
        for command in (["fetch", "--latest", "1"], ["sync"], ["cache", "status"]):
            yield Case(
                f"store-{name}-{'-'.join(command)}",
                command,
                0,
                "moved",
                setup=setup,
                moved=(str(Path("cache") / "STORE"),),
            )


def sandbox_rows() -> Iterator[Case]:
    bad = {
        "--port": ["70000", "-1", "abc", "", "٨٨٠٠"],
        "--contacts": ["0", "1000000000000", "abc", "-5"],
        "--rate-limit": ["-1", "nan", "inf", "abc", "1e400"],
        "--latency": ["inf", "nan", "-1", "abc", "1e400"],
        "--daily-quota": ["0", "-1", "abc"],
        "--seed": ["abc", "1" * 40, "٣"],
        "--listing": ["random", "", "Created"],
    }
    for option, values in bad.items():
        for value in values:
            yield Case(f"sandbox{option}-{value[:12] or 'empty'}", ["sandbox", f"{option}={value}"], 2, option)


CASES: list[Case] = [
    *date_rows(),
    *zone_rows(),
    *number_rows(),
    *output_rows(),
    *usage_rows(),
    *changes_rows(),
    *campaigns_rows(),
    *api_url_rows(),
    *auth_url_rows(),
    *access_token_rows(),
    *setting_rows(),
    *config_rows(),
    *token_file_rows(),
    *sign_in_rows(),
    *sandbox_rows(),
    *target_rows(),
    *store_rows(),
]


def test_the_table_is_large_and_its_names_unique() -> None:
    assert len(CASES) >= 300
    assert len({case.name for case in CASES}) == len(CASES)


# -- running a row -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def people(shared_sandbox: Sandbox) -> list[str]:
    """Every address and full name of the shared account: none may appear in a message."""
    found = truth(shared_sandbox, include_deleted=True)
    return [o.email for o in found if o.email] + [
        f"{o.first_name} {o.last_name}" for o in found if o.first_name and o.last_name
    ]


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def _world(tmp_path: Path, sandbox: Sandbox) -> World:
    world = World(tmp_path, sandbox, Tokens.from_response(sandbox.oauth.issue()))
    world.write("work/existing.csv", "contact_id,email\r\n1,a@example.com\r\n")
    world.write("work/existing.xlsx", b"PK\x03\x04 an earlier report")
    world.write("config/tokens.json", "")
    from ccoptout_xl.credentials import TokenFile

    TokenFile(world.config / "tokens.json").save(world.tokens)
    world.cache.mkdir()
    return world


def _expand(text: str, world: World) -> str:
    token = world.sandbox.token
    head, tail = token[: len(token) // 2], token[len(token) // 2 :]
    return (
        text.replace("{token}", token)
        .replace("{head}", head)
        .replace("{tail}", tail)
        .replace("{work}", str(world.work))
    )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(
    case: Case, shared_sandbox: Sandbox, people: list[str], tmp_path: Path, monkeypatch, capsys, caplog
) -> None:
    world = _world(tmp_path, shared_sandbox)
    monkeypatch.chdir(world.work)
    monkeypatch.setenv("CCOPTOUT_CONFIG_DIR", str(world.config))
    monkeypatch.setenv("CCOPTOUT_CACHE_DIR", str(world.cache))
    monkeypatch.setenv("CCOPTOUT_API_URL", shared_sandbox.base_url)
    monkeypatch.setenv("CCOPTOUT_TOKEN_STORE", "file")
    for name in ("CCOPTOUT_DAILY_QUOTA", "CCOPTOUT_QUOTA_SHARE", "CCOPTOUT_RATE_LIMIT", "CCOPTOUT_CLIENT_SECRET",
                 "CCOPTOUT_FULL_SYNC_DAYS"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    if case.mode == TOKEN_MODE:
        monkeypatch.setenv("CCOPTOUT_ACCESS_TOKEN", shared_sandbox.token)
    else:
        monkeypatch.delenv("CCOPTOUT_ACCESS_TOKEN", raising=False)
        monkeypatch.setenv("CCOPTOUT_CLIENT_ID", shared_sandbox.oauth.client_id)
        monkeypatch.setenv("CCOPTOUT_AUTH_URL", shared_sandbox.auth_url)
    for name, value in case.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, _expand(value, world))
    if case.setup:
        case.setup(world)
    case.moved = tuple(m.replace("STORE", _store_path(world).name) for m in case.moved)
    before = _snapshot(tmp_path)
    shared_sandbox.reset_log()
    caplog.set_level("DEBUG")

    try:
        code = main([_expand(arg, world) for arg in case.argv])
    except SystemExit as exit_:  # argparse
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()

    assert code == case.code, err
    assert case.needle.lower() in err.lower(), err
    if code != 0:
        assert err.count("\n") == 1, err
    assert "Traceback" not in err and "unexpected error" not in err
    secrets = [shared_sandbox.token, world.tokens.access_token, world.tokens.refresh_token or ""]
    for text in (out, err, caplog.text):
        for secret in secrets:
            assert secret[-24:] not in text
    assert not any(person in err for person in people)
    if code == 2:
        assert list(shared_sandbox.requests) == [] and list(shared_sandbox.oauth.token_requests) == []
    after = _snapshot(tmp_path)
    for path, digest in before.items():
        if path in case.moved:
            assert digest in after.values(), f"{path} was lost, not moved aside intact"
        else:
            assert after.get(path) == digest, f"{path} changed"
    leftovers = [p for p in after if re.search(r"\.tmp$", p)]
    assert leftovers == []
