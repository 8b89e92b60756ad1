"""Long reads in parallel windows, over real HTTP against the sandbox: the same rows as a sequential read, requests
in flight at once under the rate limit, and a failure anywhere surfacing once with no thread left behind."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Iterator

import pytest

from ccoptout_xl.exceptions import ApiError, QuotaExceeded
from ccoptout_xl.http_client import CROWDED_MARGIN, WIDER_MARGIN, CallStats, RequestPacer
from ccoptout_xl.query import FALLBACK_NOTICE, OptOutQuery, from_api
from ccoptout_xl.sandbox import AccountSpec, Fault, Sandbox

from .conftest import ANCHOR, FakeTime, make_client, truth

READERS = "ccoptout-read-"


def ids(optouts) -> list[str]:
    return [o.contact_id for o in optouts]


def readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(READERS)]


@pytest.fixture(scope="module")
def many() -> Iterator[Sandbox]:
    """7,500 opt-outs (15 pages), some deleted; no limits."""
    spec = AccountSpec(contacts=25_000, seed=11, unsubscribed_share=0.3, anchor=ANCHOR)
    with Sandbox(spec, rate_limit=None, daily_quota=None) as sb:
        yield sb


@pytest.fixture(scope="module")
def burst() -> Iterator[Sandbox]:
    """6,000 opt-outs, 1,000 of them removed in one second: the first page of every window that holds them is
    theirs (the sandbox lists the oldest contacts first)."""
    spec = AccountSpec(contacts=20_000, seed=12, unsubscribed_share=0.3, anchor=ANCHOR, bulk_removal=1_000)
    with Sandbox(spec, rate_limit=None, daily_quota=None) as sb:
        yield sb


@pytest.fixture
def fresh() -> Iterator[Sandbox]:
    """4,000 opt-outs (8 pages) a test may break."""
    with Sandbox(AccountSpec(contacts=20_000, seed=3, anchor=ANCHOR), rate_limit=None, daily_quota=None) as sb:
        yield sb


def read(sandbox: Sandbox, query: OptOutQuery, **kwargs):
    return from_api(make_client(sandbox), query, now=ANCHOR, **kwargs)


@pytest.mark.parametrize(
    "account, query",
    [
        ("many", OptOutQuery()),
        ("many", OptOutQuery(include_deleted=True)),
        ("many", OptOutQuery(since=ANCHOR - dt.timedelta(days=2000), until=ANCHOR - dt.timedelta(days=30))),
        ("burst", OptOutQuery()),
    ],
    ids=["all", "deleted too", "since and until", "a burst of 1,000 in one second"],
)
def test_parallel_and_sequential_reads_give_the_same_rows(
    account: str, query: OptOutQuery, request: pytest.FixtureRequest
) -> None:
    sandbox: Sandbox = request.getfixturevalue(account)
    sandbox.latency = 0.02
    try:
        sequential = read(sandbox, query, workers=1)
        parallel = read(sandbox, query, workers=4)
    finally:
        sandbox.latency = 0.0
    expected = [o for o in truth(sandbox, include_deleted=query.include_deleted) if query.matches(o)]
    assert list(parallel) == list(sequential) and ids(parallel) == ids(expected) and len(expected) > 3_000
    # Each window's part page, a first page read again, and up to one window cut again per worker.
    assert parallel.calls <= sequential.calls + 2 * 8 + 1
    assert readers() == []


def test_windows_cut_where_the_caller_says(many: Sandbox) -> None:
    everything = truth(many)
    hint = [o.opt_out_date for o in everything[::40]]  # an earlier snapshot's dates, newest first: any order does
    many.reset_log()
    result = read(many, OptOutQuery(), workers=3, split_hint=hint)
    assert ids(result) == ids(everything)
    ends = sorted({r.query["optout_before"] for r in many.requests if "optout_before" in r.query})
    cuts = [dt.datetime.fromisoformat(end.replace("Z", "+00:00")) - dt.timedelta(seconds=1) for end in ends]
    sizes = [
        sum(low <= o.opt_out_date < high for o in everything)
        for low, high in itertools.pairwise(
            [dt.datetime.min.replace(tzinfo=dt.timezone.utc), *cuts, dt.datetime.max.replace(tzinfo=dt.timezone.utc)]
        )
    ]
    assert len(sizes) == 3 and max(sizes) < 1.2 * min(sizes), sizes  # 15 pages: 3 windows of similar sizes


def test_windows_are_read_at_once_within_the_rate_limit(many: Sandbox) -> None:
    # A sandbox of its own (the same account), limited from the start: the rate window holds only this read. At
    # 10 calls a second and 0.3 s a page, one cursor would make 3 calls a second: more must be in flight.
    with Sandbox(many.spec, rate_limit=10, daily_quota=None, latency=0.3) as limited:
        client = make_client(limited, rate=10)
        result = from_api(client, OptOutQuery(), now=ANCHOR)  # workers sized from the first call's latency
        pages = [r for r in limited.requests if r.path == "/v3/contacts"]
    assert ids(result) == ids(truth(many))
    assert {r.status for r in pages} == {200} and client.stats.throttled == 0
    in_flight = [sum(o.at <= r.at < o.at + o.delay for o in pages) for r in pages]  # r itself included
    assert max(in_flight) >= 3 and sum(n > 1 for n in in_flight) >= len(pages) // 2, in_flight
    assert readers() == []


def test_progress_is_reported_from_the_calling_thread(fresh: Sandbox) -> None:
    seen: list[tuple[int, int | None, threading.Thread]] = []

    def progress(done: int, total: int | None) -> None:
        seen.append((done, total, threading.current_thread()))

    read(fresh, OptOutQuery(), workers=3, on_progress=progress)
    assert {thread for *_, thread in seen} == {threading.current_thread()}
    assert len(seen) >= 8 and {total for _, total, _ in seen} == {len(truth(fresh))}
    assert [done for done, *_ in seen] == sorted(done for done, *_ in seen)


def test_a_failing_window_is_the_one_error_and_the_others_stop(fresh: Sandbox) -> None:
    fresh.latency = 0.05
    fresh.faults.add(Fault("500", at_request=4, burst=1_000))  # a window's first page, and every request after it
    fresh.reset_log()
    with pytest.raises(ApiError, match="HTTP 500"):
        read(fresh, OptOutQuery(), workers=4)
    assert readers() == []
    sent = len(fresh.requests)
    assert sent <= 3 + 4 * 4, sent  # the good ones, then each worker's tries at most: no more windows opened


def test_quota_exceeded_in_a_window_is_raised_as_such(fresh: Sandbox) -> None:
    fresh.daily_quota = 5
    with pytest.raises(QuotaExceeded):
        read(fresh, OptOutQuery(), workers=4)
    assert readers() == []


def test_an_interrupt_in_the_calling_thread_stops_the_workers(fresh: Sandbox) -> None:
    fresh.latency = 0.1

    def interrupt(done: int, total: int | None) -> None:
        if done >= 1_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        read(fresh, OptOutQuery(), workers=4, on_progress=interrupt)
    assert readers() == []
    sent = len(fresh.requests)
    assert sent <= 3 + 4 + 4 + 2, sent  # pages read, in flight and queued when it came: nothing after


def test_a_server_without_optout_filters_is_read_page_by_page(fresh: Sandbox) -> None:
    fresh.optout_filters = False
    notices: list[str] = []
    result = read(fresh, OptOutQuery(), workers=4, on_notice=notices.append)
    assert ids(result) == ids(truth(fresh)) and not result.full_scan and notices == []  # the query had no filter
    since = ANCHOR - dt.timedelta(days=3_000)
    result = read(fresh, OptOutQuery(since=since), workers=4, on_notice=notices.append)
    assert notices == [FALLBACK_NOTICE] and result.full_scan  # as before: the first page already asked for them
    assert ids(result) == ids(o for o in truth(fresh) if o.opt_out_date >= since)
    assert readers() == []


def test_counts_that_leave_out_the_optout_filters_do_not_break_a_parallel_read(fresh: Sandbox) -> None:
    fresh.counts_ignore_optout_filters = True
    since = ANCHOR - dt.timedelta(days=2_000)
    result = read(fresh, OptOutQuery(since=since), workers=4)
    assert ids(result) == ids(o for o in truth(fresh) if o.opt_out_date >= since)


def test_workers_below_one_are_refused(fresh: Sandbox) -> None:
    with pytest.raises(ValueError, match="workers"):
        read(fresh, OptOutQuery(), workers=0)


# -- the transport's part ------------------------------------------------------------------------------------


def test_call_stats_add_up_from_many_threads() -> None:
    stats = CallStats()

    def count() -> None:
        for _ in range(10_000):
            stats.add(calls=1, contacts=500)

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (stats.calls, stats.contacts) == (80_000, 40_000_000)


def test_a_cancelled_wait_for_the_pacer_returns_at_once_and_takes_no_start() -> None:
    clock = FakeTime(0.0)
    pacer = RequestPacer(2.0, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.now = 0.5
    pacer.wait()  # two starts, at 0 and 0.5: the next may start at 1.03
    cancel = threading.Event()
    cancel.set()
    clock.now = 0.6
    pacer.wait(cancel)  # the window is full: it would wait, but the read was stopped
    assert clock.now == 0.6
    assert pacer.wait() == pytest.approx(1.03 - 0.6)  # not 1.53: the cancelled caller took no start


def test_a_request_sent_while_others_are_in_flight_keeps_a_wider_margin() -> None:
    clock = FakeTime(0.0)
    pacer = RequestPacer(4.0, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        pacer.wait()
    assert pacer.wait(crowded=True) == pytest.approx(1.0 + 0.03 + CROWDED_MARGIN)


def test_too_many_requests_widen_the_margin_for_good() -> None:
    clock = FakeTime(0.0)
    pacer = RequestPacer(4.0, clock=clock, sleep=clock.sleep)
    pacer.hold(0.0)  # the API said "too many requests"
    for _ in range(4):
        pacer.wait()  # at 0, as the held starts allow
    assert pacer.wait() == pytest.approx(1.0 + 0.03 + WIDER_MARGIN)
