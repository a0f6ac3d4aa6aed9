"""The thread that keeps a store's profile indexes current off the request path.

Every ``interval_s`` seconds, or at once when woken (PostgreSQL's change notifications wake it),
it runs :meth:`~persona_engine.retrieval.sync.ProfileIndexes.maintain`: other processes' profile
changes applied, the change log pruned in chunks, indexes saved and compacted.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sync import ProfileIndexes

log = logging.getLogger(__name__)


class IndexMaintenance:
    """A daemon thread running ``indexes.maintain()``; :meth:`stop` ends it."""

    def __init__(self, indexes: ProfileIndexes, interval_s: float = 1.0):
        self.indexes = indexes
        self.interval_s = float(interval_s)
        self.rounds = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="persona-index-upkeep", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run a round now (e.g. another process committed profile changes)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.indexes.maintain()
            except Exception:  # the store went away for a moment: the next round tries again
                log.exception("profile index upkeep failed")
            self.rounds += 1
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
