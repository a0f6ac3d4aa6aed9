"""Recently read features kept in memory beside the store's feature cache.

Scoring a comparison on the write path (online evaluation) or a request reads the same few
thousand items' features again and again; from SQLite or PostgreSQL each read is a query and a
decode. The memo answers those from memory, first in first out within a byte budget
(``PERSONA_ENGINE_FEATURE_MEMO_MB``, default 64; 0 turns it off). Features are a function of
(encoder id, prompt hash, response hash), so a remembered vector is never wrong; deleting a user
clears the memo, so no vector of a deleted text stays in this process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence

import numpy as np

Key = tuple[str, str]  # (prompt hash, hash), as in the store's feature cache


def _budget_from_env() -> int:
    raw = os.environ.get("PERSONA_ENGINE_FEATURE_MEMO_MB", "64").strip()
    try:
        mb = float(raw)
    except ValueError:
        mb = 64.0
    return max(0, int(mb * 2**20))


class _Block:
    """The remembered vectors of one encoder and width: rows of one matrix, appended."""

    def __init__(self, width: int):
        self.index: dict[Key, int] = {}
        self.matrix = np.empty((256, width), dtype=np.float32)

    def add(self, key: Key, vector: np.ndarray) -> int:
        """Bytes added (0 when the key is already here)."""
        if key in self.index:
            return 0
        n = len(self.index)
        if n == len(self.matrix):
            grown = np.empty((2 * n, self.matrix.shape[1]), dtype=np.float32)
            grown[:n] = self.matrix
            self.matrix = grown  # readers holding the old matrix still see every row they asked for
        self.matrix[n] = vector
        self.index[key] = n
        return int(self.matrix.shape[1]) * 4


class FeatureMemo:
    """(encoder id, prompt hash, hash) -> feature vector, at most ``max_bytes`` of vectors.

    Vectors of one encoder and width are rows of one matrix, so a batch that is all remembered
    comes back as one fancy-indexing copy (:meth:`stack`). When the budget is spent, the block
    that grew past it starts again empty (the hot set comes back from the store on its next use).
    """

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = _budget_from_env() if max_bytes is None else max(0, int(max_bytes))
        self._blocks: dict[tuple[str, int], _Block] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(b.index) for b in self._blocks.values())

    def stack(self, encoder: str, width: int, keys: Sequence[Key]) -> np.ndarray | None:
        """The vectors of ``keys`` in order, (len(keys), width) float32, when every one of them
        is remembered; else None."""
        block = self._blocks.get((encoder, width))
        if block is None:
            return None
        index = block.index
        try:
            rows = [index[k] for k in keys]
        except KeyError:
            return None
        return block.matrix[rows]

    def get_many(self, encoder: str, width: int, keys: Sequence[Key]) -> dict[Key, np.ndarray]:
        block = self._blocks.get((encoder, width))
        if block is None:
            return {}
        index, matrix = block.index, block.matrix
        return {k: matrix[i] for k in keys if (i := index.get(k)) is not None}

    def put_many(self, encoder: str, width: int, vectors: Mapping[Key, np.ndarray]) -> None:
        if not self.max_bytes or not vectors:
            return
        with self._lock:
            block = self._blocks.get((encoder, width))
            if block is None:
                block = self._blocks[(encoder, width)] = _Block(width)
            for key, v in vectors.items():
                if v.shape == (width,):
                    self._bytes += block.add(key, v)
            if self._bytes > self.max_bytes:
                self._bytes -= 4 * width * len(block.index)
                self._blocks[(encoder, width)] = _Block(width)

    def clear(self) -> None:
        with self._lock:
            self._blocks = {}
            self._bytes = 0
