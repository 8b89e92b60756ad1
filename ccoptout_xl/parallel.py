"""Several cursors followed at once through one client, so that a read of many pages runs at the rate limit
whatever each page's latency.

The caller (:mod:`.query`) cuts a read into windows, each a cursor of pages. Workers share the client, so
every request goes through its one pacer. The windows' first pages are fetched first, largest window first:
each says how many pages its window holds. From then on a free worker fetches the next page of the window with
the most pages left, so the windows shrink together and end together: the read's tail is about one page, not
one window. A window too long to end in time is cut again (the caller says where) and read in its parts.

Pages come out in the calling thread through a small queue: the caller stores them as a sequential read would,
memory stays flat, and its callbacks run where it expects. The first failure of any worker stops the others and
is raised in the calling thread; leaving the ``with`` block stops and joins every worker.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

from .client import Page
from .http_client import Cancelled

W = TypeVar("W")

POLL = 0.2  # seconds: how often a blocked thread looks whether the read was stopped (and Ctrl+C is seen)
_DONE = object()  # what a worker puts in the queue last


@dataclass(eq=False)
class _Window(Generic[W]):
    spec: W
    left: float  # pages still to fetch: an estimate until the first page gives the count
    pages: Generator[Page, None, None] | None = None  # None until its first page is asked for
    busy: bool = False


Opener = Callable[[W, threading.Event], Generator[Page, None, None]]
Splitter = Callable[[W, Page], "list[tuple[W, float]] | None"]


class ParallelPages(Generic[W]):
    """The pages of ``windows`` (each with its estimated number of pages), fetched by ``workers`` threads.

    ``open_window(spec, cancel)`` starts a window's cursor (its requests must honour ``cancel``); ``split(spec,
    first_page)`` may return smaller windows to read instead of one whose first page shows it is too long (that
    page is then dropped). Iterate inside ``with``; pages come in no particular order.
    """

    def __init__(
        self,
        windows: Iterable[tuple[W, float]],
        open_window: Opener[W],
        *,
        workers: int,
        split: Splitter[W] | None = None,
    ) -> None:
        self._windows = [_Window(spec, estimate) for spec, estimate in windows]
        self._open = open_window
        self._split = split
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._out: queue.Queue[object] = queue.Queue(maxsize=max(2, workers))
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._work, name=f"ccoptout-read-{n}", daemon=True) for n in range(workers)
        ]

    def __enter__(self) -> ParallelPages[W]:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Page]:
        finished = 0
        while finished < len(self._threads):
            try:
                item = self._out.get(timeout=POLL)
            except queue.Empty:
                item = None
            if self._error is not None:
                raise self._error
            if item is _DONE:
                finished += 1
            elif isinstance(item, Page):
                yield item

    def close(self) -> None:
        """Stop every worker and wait for them (a request under way is let finish: nothing more is sent)."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join()
        for window in self._windows:
            if window.pages is not None:
                window.pages.close()

    # -- in the workers ------------------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while (window := self._take()) is not None:
                page = self._fetch(window)
                if page is not None:
                    self._put(page)
        except Cancelled:
            pass
        except BaseException as exc:  # handed to the calling thread, which raises it
            self._fail(exc)
        finally:
            self._put(_DONE)

    def _take(self) -> _Window[W] | None:
        """The window to fetch a page of next (unopened ones first), or None once there is nothing left."""
        with self._changed:
            while not self._stop.is_set():
                idle = [w for w in self._windows if not w.busy]
                unopened = [w for w in idle if w.pages is None]
                if idle:
                    window = max(unopened or idle, key=lambda w: w.left)
                    window.busy = True
                    return window
                if not self._windows:
                    return None
                self._changed.wait()
            return None

    def _fetch(self, window: _Window[W]) -> Page | None:
        """The window's next page, or None when it was replaced by smaller ones."""
        first = window.pages is None
        if window.pages is None:
            window.pages = self._open(window.spec, self._stop)
        page = next(window.pages, None)
        parts = self._split(window.spec, page) if first and page is not None and self._split else None
        with self._changed:
            window.busy = False
            if page is None or page.next_href is None or parts:
                self._windows.remove(window)
                window.pages.close()
                self._windows.extend(_Window(spec, estimate) for spec, estimate in parts or ())
            elif first and page.total is not None and page.items:
                window.left = math.ceil(page.total / len(page.items)) - 1
            else:
                window.left -= 1
            self._changed.notify_all()
        return None if parts else page

    def _put(self, item: object) -> None:
        while True:
            try:
                self._out.put(item, timeout=POLL)
                return
            except queue.Full:
                if self._stop.is_set():
                    return

    def _fail(self, exc: BaseException) -> None:
        with self._changed:
            if self._error is None and not self._stop.is_set():
                self._error = exc
            self._stop.set()
            self._changed.notify_all()
