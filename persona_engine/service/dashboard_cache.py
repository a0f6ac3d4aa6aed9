"""The dashboard's cache: what a page aggregates (the online report, counts, the profile map, their
plots) is computed once and kept with the store's *marks*, the cheap figures that change when the
data behind the page changes.

At 100k users an aggregate takes seconds to compute (the online report's bootstrap CIs above
all), so no page load waits for one except the very first: once the data has changed, the page is
served from the last computation (it shows when that was) while one background thread computes the
new one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from .reads import StoreReader

log = logging.getLogger("persona_engine.service.dashboard")

T = TypeVar("T")


def store_marks(reader: StoreReader) -> tuple[Any, ...]:
    """Figures that change when the data behind a page changes: the newest comparison and outcome
    ids, the numbers of users and profiles (deletions), and every model version's state. A few
    reads of indexes (portable SQL: SQLite and PostgreSQL alike); no table is scanned.

    A profile re-embedded in place without a new comparison (``persona onboard`` again) changes
    none of them: the page shows it once its entry is older than :attr:`PageCache.ttl_s`."""
    row = reader.query(
        "SELECT (SELECT max(id) FROM comparisons), (SELECT max(comparison_id) FROM online_eval), "
        "(SELECT count(*) FROM users), (SELECT count(*) FROM profiles)"
    )[0]
    models = reader.query("SELECT id, active, metrics FROM models ORDER BY id")
    return (*row, hash(tuple(models)))


@dataclass(frozen=True)
class _Entry:
    started: float  # time.monotonic() when its computation started
    marks: Hashable
    value: Any


class PageCache:
    """A thread-safe LRU of page aggregates, each kept with the marks it was computed under.

    - No entry yet: computed now; other requests for the same key wait for that one computation.
    - An entry is *fresh* while the marks are unchanged and it is younger than ``ttl_s``, and, when
      the marks have changed, while it is younger than ``refresh_s`` (a store taking writes all
      the time is not recomputed on every load).
    - A stale entry is served at once while one background thread recomputes it
      (``background=True``), or recomputed before answering (``background=False``).

    So a changed store shows on the page within ``refresh_s`` plus one computation; a change the
    marks do not see (a user's attributes edited, a profile re-embedded in place) within ``ttl_s``
    plus one computation.
    """

    def __init__(
        self,
        max_entries: int = 64,
        refresh_s: float = 10.0,
        ttl_s: float = 60.0,
        background: bool = True,
    ):
        self.max_entries, self.refresh_s, self.ttl_s = max_entries, refresh_s, ttl_s
        self.background = background
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._computing: dict[Hashable, threading.Lock] = {}
        self._refreshing: dict[Hashable, threading.Thread] = {}
        self._lock = threading.Lock()
        self.hits = self.stale = self.misses = 0

    def get(self, key: Hashable, marks: Hashable, compute: Callable[[], T]) -> T:
        entry, fresh = self._lookup(key, marks)
        if entry is not None and (fresh or self.background):
            with self._lock:
                if fresh:
                    self.hits += 1
                else:
                    self.stale += 1
            if not fresh:
                self._refresh_later(key, marks, compute)
            return entry.value  # type: ignore[no-any-return]
        return self._compute(key, marks, compute)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def settle(self, timeout: float = 60.0) -> None:
        """Wait for the background recomputations under way (tests, benchmarks)."""
        with self._lock:
            threads = list(self._refreshing.values())
        for t in threads:
            t.join(timeout)

    def _lookup(self, key: Hashable, marks: Hashable) -> tuple[_Entry | None, bool]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None, False
            self._entries.move_to_end(key)
        age = time.monotonic() - entry.started
        fresh = age <= self.ttl_s and (entry.marks == marks or age <= self.refresh_s)
        return entry, fresh

    def _compute(self, key: Hashable, marks: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            computing = self._computing.setdefault(key, threading.Lock())
        with computing:
            entry, fresh = self._lookup(key, marks)  # computed by another thread meanwhile
            if entry is not None and fresh:
                return entry.value  # type: ignore[no-any-return]
            started = time.monotonic()
            value = compute()
            with self._lock:
                self.misses += 1
                self._entries[key] = _Entry(started, marks, value)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    dropped, _ = self._entries.popitem(last=False)
                    self._computing.pop(dropped, None)
            return value

    def _refresh_later(self, key: Hashable, marks: Hashable, compute: Callable[[], Any]) -> None:
        with self._lock:
            if key in self._refreshing:
                return
            thread = threading.Thread(
                target=self._refresh, args=(key, marks, compute), daemon=True, name="dashboard"
            )
            self._refreshing[key] = thread
        thread.start()

    def _refresh(self, key: Hashable, marks: Hashable, compute: Callable[[], Any]) -> None:
        try:
            self._compute(key, marks, compute)
        except Exception:  # noqa: BLE001 - the stale entry stays; the next load tries again
            log.exception("dashboard: recomputing %r failed", key)
        finally:
            with self._lock:
                self._refreshing.pop(key, None)
