"""The local opt-out store under hostile conditions: a full disk, an unusable cache folder or file, another
program's SQLite file, ``cache clear`` racing a sync, and Excel's worksheet functions on all of that.

Tests run as root, whom permission bits do not stop: the obstacles are real ones (a file where a folder should
be, a folder where a file should be, an immutable file, a read-only mount or a full tmpfs in a private mount
namespace, a user namespace in which root's files are not root's).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from ccoptout_xl import cli, excel, store
from ccoptout_xl.cli import main
from ccoptout_xl.exceptions import StoreError
from ccoptout_xl.query import OptOutQuery
from ccoptout_xl.sandbox import Sandbox
from ccoptout_xl.store import OptOutStore

from .conftest import make_client, truth
from .test_output_files import in_namespace, on_small_disk, one_line
from .test_store import ids
from .test_store import sandbox as _store_sandbox

sandbox = _store_sandbox  # the fixture: the same 1,224-opt-out account as the store's tests


def contact_calls(sandbox: Sandbox) -> int:
    return sum(r.path == "/v3/contacts" for r in sandbox.requests)


def store_path(sandbox: Sandbox) -> Path:
    return OptOutStore.path_for(make_client(sandbox))


def stored_ids(path: Path) -> list[str]:
    with OptOutStore(path) as opened:
        return ids(opened.query(OptOutQuery(include_deleted=True)))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def synced(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> Path:
    """Sync the store once; return its path."""
    assert main(["sync"]) == 0
    capsys.readouterr()
    return store_path(sandbox)


# -- a full disk ------------------------------------------------------------------------------------------------


def content_bytes(path: Path) -> int:
    with sqlite3.connect(path) as db:
        pages, free, size = (
            db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "freelist_count", "page_size")
        )
    return (pages - free) * size


def test_a_full_sync_the_disk_cannot_hold_is_refused_before_any_call(sandbox: Sandbox, capsys, tmp_path: Path) -> None:
    path = synced(sandbox, capsys)
    before = stored_ids(path)
    seed = tmp_path / "seed"
    shutil.copytree(tmp_path / "cache", seed)
    sandbox.reset_log()
    done, after = on_small_disk(tmp_path / "cache", seed, "sync", "--full", size_kb=1024, free_kb=64)
    assert done.returncode == 6, done.stderr
    message = one_line(done.stderr)
    assert str(path) in message and "needs about" in message and "no API call was made" in message
    assert contact_calls(sandbox) == 0  # the quota is not spent on a sync that cannot be stored
    assert stored_ids(after / path.name) == before


@pytest.mark.parametrize("kind", ["incremental", "full"])
def test_a_sync_whose_write_fails_on_a_full_disk_keeps_the_previous_snapshot(
    sandbox: Sandbox, capsys, tmp_path: Path, kind: str
) -> None:
    if kind == "full":  # a small snapshot, then many more opt-outs: the new one cannot fit where the old one was
        sandbox.account.resubscribe([o.contact_id for o in truth(sandbox)][:600])
    path = synced(sandbox, capsys)
    before = stored_ids(path)
    with OptOutStore(path) as synced_store:
        first_sync_calls = synced_store.calls_today()
    # Enough room to open the store (the shared-memory index, a note) and pass the check before a sync (for a
    # full one, the snapshot's size), not enough for the new opt-outs on top.
    snapshot = content_bytes(path) if kind == "full" else 0
    free_kb = (snapshot + store.SLACK_BYTES) // 1024 + 48
    seed = tmp_path / "seed"
    shutil.copytree(tmp_path / "cache", seed)
    sandbox.account.opt_out(count=600 if kind == "incremental" else 900)
    argv = ["sync"] if kind == "incremental" else ["sync", "--full"]
    sandbox.reset_log()
    done, after = on_small_disk(tmp_path / "cache", seed, *argv, size_kb=4096, free_kb=free_kb, times=2)
    assert done.returncode == 6, done.stderr
    failed, refused = done.stderr.splitlines()
    assert str(path) in failed and "its disk is full" in failed and "opt-outs read" in failed
    assert "the stored opt-outs were left as they were" in failed and "Traceback" not in done.stderr
    assert stored_ids(after / path.name) == before  # the previous snapshot, whole and readable
    assert not [p.name for p in after.iterdir() if p.name.startswith(".")]  # no temporary file left
    # Trying again on the same full disk spends no more quota: the space the failed sync needed was noted.
    assert "Not syncing" in refused and "no API call was made" in refused
    with OptOutStore(after / path.name) as failed_store:
        assert failed_store.calls_today() == first_sync_calls + contact_calls(sandbox)  # the failed one's, counted


# -- the cache folder or the store file unusable ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["the cache folder", "a folder above it"])
def test_a_file_where_the_cache_folder_should_be(
    sandbox: Sandbox, capsys, tmp_path: Path, monkeypatch, where: str
) -> None:
    blocker = tmp_path / "in-the-way"
    blocker.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("CCOPTOUT_CACHE_DIR", str(blocker if where == "the cache folder" else blocker / "cache"))
    code, err = run(capsys, "fetch", "--latest", "1")
    assert code == 6
    assert str(blocker) in one_line(err) and "is a file, not a folder" in err and "--no-cache" in err
    assert sandbox.requests == [] and blocker.read_text(encoding="utf-8") == "not a folder"
    assert main(["fetch", "--no-cache", "--latest", "1"]) == 0  # what the message offers works


def test_a_folder_where_the_store_file_should_be(sandbox: Sandbox, capsys) -> None:
    path = store_path(sandbox)
    (path / "something").mkdir(parents=True)
    code, err = run(capsys, "fetch", "--latest", "1")
    assert code == 6 and str(path) in one_line(err) and "is a folder, not a file" in err
    assert sandbox.requests == [] and (path / "something").is_dir()


def test_a_folder_where_the_lock_file_should_be(sandbox: Sandbox, capsys) -> None:
    path = synced(sandbox, capsys)
    lock = Path(f"{path}.lock")
    lock.unlink()
    lock.mkdir()
    sandbox.reset_log()
    for argv in (["sync", "--full"], ["cache", "clear"]):
        code, err = run(capsys, *argv)
        assert code == 6 and str(lock) in one_line(err) and "is a folder" in err
    assert contact_calls(sandbox) == 0 and len(stored_ids(path)) == len(truth(sandbox, include_deleted=True))


@pytest.mark.parametrize("layout", ["its own tables", "a meta table of its own"])
def test_another_programs_sqlite_file_is_moved_aside_and_rebuilt(sandbox: Sandbox, capsys, layout: str) -> None:
    path = store_path(sandbox)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
        if layout == "a meta table of its own":
            db.execute("CREATE TABLE meta (name TEXT, setting TEXT)")
    db.close()
    code, err = run(capsys, "fetch", "--include-deleted", "--format", "json")
    assert code == 0, err
    assert "another program's SQLite database" in err and "moved to" in err
    (aside,) = [p for p in path.parent.iterdir() if ".damaged-" in p.name and p.name.endswith(tuple("0123456789"))]
    with sqlite3.connect(aside) as db:
        assert db.execute("SELECT text FROM notes").fetchall() == [("keep me",)]  # never emptied
    db.close()
    assert stored_ids(path) == ids(truth(sandbox, include_deleted=True))


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files to make immutable (``chattr +i``: not even root can change them), made mutable again afterwards."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: no way to make a file that root cannot write")
    files: list[Path] = []
    yield files
    for file in files:
        subprocess.run(["chattr", "-i", str(file)], check=False)


def make_immutable(immutable: list[Path], file: Path) -> None:
    done = subprocess.run(["chattr", "+i", str(file)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"this file system cannot make files immutable ({done.stderr.strip()})")
    immutable.append(file)


def test_a_leftover_shared_memory_file_that_cannot_be_written(sandbox: Sandbox, capsys, immutable: list[Path]) -> None:
    path = synced(sandbox, capsys)
    shm = Path(f"{path}-shm")
    shm.write_bytes(bytes(32_768))  # left behind by a crash, then made unwritable
    make_immutable(immutable, shm)
    sandbox.reset_log()
    code, err = run(capsys, "fetch", "--refresh", "--latest", "1")
    assert code == 6 and str(shm) in one_line(err) and "remove it" in err
    assert code == main(["sync"]) and contact_calls(sandbox) == 0  # found before any call: no quota spent
    capsys.readouterr()
    # Reading needs no writing: a fresh store still answers, and so do Excel's worksheet functions.
    assert main(["fetch", "--latest", "1"]) == 0
    assert excel.OPTOUTS_COUNT("2000-01-01") == len(truth(sandbox))


def test_an_immutable_store_says_so_in_the_worksheet_functions_too(
    sandbox: Sandbox, capsys, immutable: list[Path]
) -> None:
    path = synced(sandbox, capsys)
    with sqlite3.connect(path) as db:  # an older layout: opening it means rebuilding it, which cannot be done
        db.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    db.close()
    make_immutable(immutable, path)
    code, err = run(capsys, "fetch", "--latest", "1")
    assert code == 6 and str(path) in one_line(err)
    answer = excel.OPTOUTS_COUNT("2000-01-01")
    assert isinstance(answer, str) and str(path) in answer and "Error" not in answer


def test_a_read_only_cache_folder(sandbox: Sandbox, capsys, tmp_path: Path) -> None:
    path = synced(sandbox, capsys)
    folder = tmp_path / "cache"
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    done = in_namespace("sh", "-c", script, "sh", str(folder), sys.executable, "-m", "ccoptout_xl", "sync", "--full")
    assert done.returncode == 6, done.stderr
    assert f"folder {folder} is on a read-only file system" in one_line(done.stderr)
    assert len(stored_ids(path)) == len(truth(sandbox, include_deleted=True))


def test_an_unreadable_cache_folder(sandbox: Sandbox, capsys, tmp_path: Path) -> None:
    synced(sandbox, capsys)
    folder = tmp_path / "cache"
    folder.chmod(0)
    try:
        # In a user namespace of its own, root is not root for the files outside: permission bits apply to it.
        try:
            done = subprocess.run(
                ["unshare", "-U", sys.executable, "-m", "ccoptout_xl", "fetch", "--latest", "1"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except OSError:
            pytest.skip("unshare is not available: no way to make a folder that root cannot read")
        if "unshare:" in done.stderr:
            pytest.skip(f"no user namespace here ({done.stderr.strip()})")
        assert done.returncode == 6, done.stderr
        assert f"folder {folder} cannot be used (Permission denied)" in one_line(done.stderr)
    finally:
        folder.chmod(0o755)


# -- cache clear and a sync at the same time ----------------------------------------------------------------------


def test_cache_clear_waits_for_a_running_sync(sandbox: Sandbox, capsys, monkeypatch) -> None:
    synced(sandbox, capsys)  # 3 calls
    inside, release, waiting = threading.Event(), threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def paused(fetched: int, total: int | None) -> None:
        inside.set()
        release.wait(30)

    def sync() -> None:
        client = make_client(sandbox)
        with OptOutStore.for_client(client) as syncing:
            results["sync"] = syncing.sync(client, full=True, on_progress=paused)

    monkeypatch.setattr(cli, "_notice", lambda text: waiting.set() if "Waiting" in text else None)
    syncer = threading.Thread(target=sync)
    clearer = threading.Thread(target=lambda: results.setdefault("clear", main(["cache", "clear"])))
    try:
        syncer.start()
        assert inside.wait(30)
        clearer.start()
        assert waiting.wait(10), "cache clear did not wait for the sync in progress"
        assert "clear" not in results
    finally:
        release.set()
        syncer.join(60)
        clearer.join(60)
    assert results["clear"] == 0 and results["sync"].kind == "full"
    with OptOutStore.for_client(make_client(sandbox)) as cleared:
        assert cleared.state().rows == 0  # cleared after the sync, as asked
        assert cleared.calls_today() == 3 + results["sync"].calls  # the sync's calls were counted, and kept


def test_cache_clear_gives_up_on_a_sync_that_does_not_end(sandbox: Sandbox, capsys, monkeypatch) -> None:
    path = synced(sandbox, capsys)
    monkeypatch.setattr(store, "LOCK_TIMEOUT", 0.0)
    with FileLock(f"{path}.lock"):  # another process syncing
        code, err = run(capsys, "cache", "clear")
    assert code == 6 and str(path) in err and "was not cleared" in err
    assert len(stored_ids(path)) == len(truth(sandbox, include_deleted=True))


def test_a_store_opened_before_a_clear_syncs_into_the_new_file(sandbox: Sandbox, capsys) -> None:
    client = make_client(sandbox)
    with OptOutStore.for_client(client) as early:
        early.sync(client)
        assert main(["cache", "clear"]) == 0
        assert early.sync(client, full=True).kind == "full"
    assert stored_ids(store_path(sandbox)) == ids(truth(sandbox, include_deleted=True))


# -- the worksheet functions ------------------------------------------------------------------------------------


def test_worksheet_functions_never_fail_on_an_unusable_cache_folder(
    sandbox: Sandbox, capsys, tmp_path: Path, monkeypatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("CCOPTOUT_CACHE_DIR", str(blocker))
    assert OptOutStore.last_used() is None and excel.OPTOUTS_SYNCED_AT() == excel.NO_DATA

    # The last store used turned into another program's database: moved aside, and no data until a Refresh.
    monkeypatch.setenv("CCOPTOUT_CACHE_DIR", str(tmp_path / "cache"))
    path = synced(sandbox, capsys)
    path.unlink()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (name TEXT)")
    db.close()
    assert excel.OPTOUTS_LATEST(1) == excel.NO_DATA
    assert [p for p in path.parent.iterdir() if ".damaged-" in p.name]


def test_the_last_used_store_is_a_clear_error_when_it_cannot_be_opened(sandbox: Sandbox, capsys) -> None:
    path = synced(sandbox, capsys)
    path.unlink()
    path.mkdir()
    assert OptOutStore.last_used() is None  # a folder is not a store: nothing to show
    path.rmdir()
    Path(f"{path}.lock").unlink()
    Path(f"{path}.lock").mkdir()
    path.write_bytes(b"damaged" * 1000)  # moving it aside needs the lock, which is a folder
    with pytest.raises(StoreError, match="is a folder"):
        OptOutStore.last_used()
    assert "is a folder" in excel.OPTOUTS_SYNCED_AT()
