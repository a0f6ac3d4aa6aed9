"""The garbage collector in the CLI's long-running commands.

Python's full collections walk every tracked object, and a process that has imported torch,
transformers and the service stack holds a few hundred thousand of them before its first request.
Work that allocates many short-lived containers (ingesting a file, scoring a batch) then pays for
walking all of them again and again. Freezing what exists once start-up is done (:func:`gc.freeze`,
as the Python documentation suggests for long-running processes) takes those objects out of every
later collection; `persona serve` and `persona ingest` do it, the library never does on its own.
``PERSONA_ENGINE_GC_FREEZE=0`` turns it off (the test suite does: its CLI calls share one process).
"""

from __future__ import annotations

import gc
import time

from .config import env_switch


def freeze_startup_objects() -> int:
    """Collect, then move every object alive now out of the collector's reach; returns how many.

    Frozen objects are never collected, so call it once, when start-up is done, from a process
    you own (not from code that runs per request or per test)."""
    if not env_switch("PERSONA_ENGINE_GC_FREEZE"):
        return 0
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class FullCollections:
    """Counts the garbage collector's full (generation 2) collections while it is open, and the
    time they took: ``with FullCollections() as gcs: ...; gcs.count, gcs.seconds``. For
    benchmarks that want to tell a slow operation from one a collection happened to pause."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self._started: float | None = None

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.count += 1
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)
