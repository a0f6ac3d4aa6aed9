"""persona_engine.heap: the benchmarks' count of full collections."""

from __future__ import annotations

import gc

from persona_engine.heap import FullCollections


def test_full_collections_are_counted_and_young_ones_are_not() -> None:
    with FullCollections() as gcs:
        gc.collect(0)
        gc.collect(1)
    assert (gcs.count, gcs.seconds) == (0, 0.0)
    with FullCollections() as gcs:
        gc.collect()
        gc.collect(2)
    assert gcs.count == 2 and gcs.seconds > 0
    gc.collect()  # after the block: no longer counted
    assert gcs.count == 2
