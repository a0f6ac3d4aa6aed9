"""ProfileIndex: nearest-neighbour search over the user vectors of one model version.

faiss does the search; this class owns the mapping between faiss rows ("slots") and user ids, so
users can be added, updated and removed by id under every index kind:

- ``flat`` (``IndexFlatL2``/``IndexFlatIP``): exact brute force. Used for populations up to
  ``approximate_above`` users (100,000 by default: measured here, an exact query over 100k x 32
  floats takes ~0.8 ms on one core, and 10x that at 1M, past the 5 ms budget).
- ``hnsw`` (``IndexHNSWFlat``, Malkov & Yashunin 2018, "Efficient and robust approximate nearest
  neighbor search using Hierarchical Navigable Small World graphs"): the approximate index chosen
  above the threshold on CPU. HNSW cannot delete a node, so a removed or updated user's slot is
  tombstoned (filtered out of every search with an ``IDSelectorBitmap``) and its stored vector is
  overwritten with its nearest live neighbour's (the graph still routes through it, and nothing of
  the removed user stays in memory). The index is rebuilt when tombstones pass
  ``compact_fraction`` of the slots.
- ``ivf`` (``IndexIVFFlat``, Jegou et al. 2011 inverted files): the approximate index on GPU (faiss
  has no GPU HNSW) and an option on CPU; rows are removed for real (``remove_ids``).

``kind="auto"`` picks flat below the threshold and hnsw (ivf on GPU) above it, and switches when
the population crosses it. :meth:`recall_at_k` measures an approximate index against exact search.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..config import PluginConfig, make_config
from ..errors import InvalidInputError, NotFoundError
from .runtime import FaissRuntime, faiss_runtime


class IndexConfig(PluginConfig):
    """Options of a :class:`ProfileIndex`."""

    kind: Literal["auto", "flat", "hnsw", "ivf"] = Field(
        "auto",
        description="Index type; auto picks flat (exact) below `approximate_above` users, else hnsw (ivf on GPU).",
    )
    metric: Literal["l2", "ip", "cosine"] = Field(
        "l2",
        description="Distance between user vectors: squared L2, negative inner product, or 1 - cosine.",
    )
    approximate_above: int = Field(
        100_000,
        ge=1,
        description="Population size above which kind=auto uses an approximate index.",
    )
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree M.")
    hnsw_ef_construction: int = Field(
        80, ge=8, description="HNSW efConstruction (build-time beam width)."
    )
    hnsw_ef_search: int = Field(
        96,
        ge=8,
        description="HNSW efSearch (query-time beam width; raised to k+1 when smaller). Measured on 100k x 16 user vectors: recall@10 0.964 at 32, 0.971 at 64, 0.974 at 96.",
    )
    ivf_nlist: int = Field(0, ge=0, description="IVF lists; 0 chooses 4*sqrt(n).")
    ivf_nprobe: int = Field(24, ge=1, description="IVF lists visited per query.")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="auto: GPU when faiss-gpu sees one, else CPU."
    )
    gpu_flat_max: int = Field(
        5_000_000, ge=1, description="On GPU, kind=auto keeps exact search up to this many users."
    )
    compact_fraction: float = Field(
        0.25, gt=0, lt=1, description="Rebuild when this share of slots are tombstones."
    )
    threads: int = Field(
        0,
        ge=0,
        description="faiss OpenMP threads for building and batch searches (0 leaves faiss's default).",
    )
    search_threads: int = Field(
        1,
        ge=0,
        description="OpenMP threads for searches of fewer than 16 queries: 1 avoids the thread hand-off that dominates a single query's latency (measured here: p99 48 ms with 2 threads, 8 ms with 1, on a loaded 2-core machine); 0 leaves faiss's default.",
    )


@dataclass(frozen=True)
class SimilarUser:
    """A neighbour: ``distance`` is lower for closer users (squared L2, -inner product, or 1 - cosine)."""

    user_id: str
    distance: float


def _no_vectors_error(dim: int) -> InvalidInputError:
    return InvalidInputError(
        f"user vectors have {dim} dimensions: similar-user search needs a personalized backend "
        "(bt and other population-only models have no per-user vector)"
    )


def hnsw_headroom(index: Any, faiss: Any, share: float = 0.125) -> None:
    """Give an ``IndexHNSWFlat`` room for ``share`` more vectors, so the next adds do not copy it.

    faiss keeps an HNSW graph and its vectors in arrays sized exactly to what was added (after a
    build or a read from disk); the first add after that reallocates and copies all of them, which
    at 1M users took 200 ms inside one online update (`persona bench scale`). Growing each array
    and shrinking it back leaves its capacity larger and its contents as they were (faiss's own
    ``resize``, which keeps its pointers current). Called once after a build or a load (later
    adds grow the arrays as ``std::vector`` does, doubling); other index kinds are left alone."""
    hnsw = getattr(index, "hnsw", None)
    storage = getattr(index, "storage", None)
    if hnsw is None or storage is None or index.ntotal == 0:
        return
    codes = getattr(faiss.downcast_index(storage), "codes", None)  # the vectors (IndexFlat)
    arrays = [hnsw.neighbors, hnsw.offsets, hnsw.levels, *([codes] if codes is not None else [])]
    for array in arrays:
        size = int(array.size())
        array.resize(size + max(1024, int(size * share)))
        array.resize(size)


class ProfileIndex:
    """An updatable nearest-neighbour index of user vectors (one model version).

    :param dim: length of the user vectors (> 0).
    :param config: :class:`IndexConfig` or a dict of its options.
    :param expected_size: the population size ``kind="auto"`` plans for.
    """

    def __init__(
        self,
        dim: int,
        config: IndexConfig | dict[str, Any] | None = None,
        *,
        expected_size: int = 0,
        runtime: FaissRuntime | None = None,
    ):
        if int(dim) <= 0:
            raise _no_vectors_error(int(dim))
        self.dim = int(dim)
        self.config = make_config(IndexConfig, config)
        self.runtime = runtime or faiss_runtime(self.config.device)
        self.runtime.set_threads(self.config.threads)
        self.kind = self.recommended_kind(expected_size)
        self.meta: dict[
            str, Any
        ] = {}  # free-form bookkeeping of the owner (model id, sync position)
        self._lock = threading.RLock()
        self._reset()

    # -- kinds -------------------------------------------------------------------------------
    def recommended_kind(self, n: int) -> str:
        if self.config.kind != "auto":
            if self.config.kind == "hnsw" and self.runtime.on_gpu:
                raise InvalidInputError(
                    "faiss has no GPU HNSW index; use kind 'ivf' or 'flat' on GPU"
                )
            return self.config.kind
        if self.runtime.on_gpu:
            return "flat" if n <= self.config.gpu_flat_max else "ivf"
        return "flat" if n <= self.config.approximate_above else "hnsw"

    def _reset(self) -> None:
        self._index: Any = None
        self._mirror: Any = None  # the GPU copy of _index, re-made after changes
        self._slot_user: list[str | None] = []
        self._slot_rowid = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._user_slot: dict[str, int] = {}
        self._selector: Any = (
            None  # (IDSelectorBitmap, its bitmap) over live slots, while tombstones exist
        )
        self._n_dead = 0

    def _new_index(self, kind: str, train: np.ndarray) -> Any:
        faiss = self.runtime.faiss
        ip = self.config.metric in ("ip", "cosine")
        metric = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
        if kind == "flat":
            return faiss.IndexFlatIP(self.dim) if ip else faiss.IndexFlatL2(self.dim)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, metric)
            index.hnsw.efConstruction = self.config.hnsw_ef_construction
            index.hnsw.efSearch = self.config.hnsw_ef_search
            return index
        n = len(train)
        nlist = self.config.ivf_nlist or max(1, int(4 * math.sqrt(max(n, 1))))
        nlist = max(
            1, min(nlist, n // 39 if n >= 39 else 1)
        )  # faiss wants >= 39 points per centroid
        quantizer = faiss.IndexFlatIP(self.dim) if ip else faiss.IndexFlatL2(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, metric)
        rng = np.random.default_rng(0)
        sample = train if n <= 256 * nlist else train[rng.choice(n, 256 * nlist, replace=False)]
        index.train(np.ascontiguousarray(sample))
        index.nprobe = min(self.config.ivf_nprobe, nlist)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct and remove by id
        return index

    # -- sizes -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._user_slot)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._user_slot

    @property
    def n_slots(self) -> int:
        return len(self._slot_user)

    @property
    def n_dead(self) -> int:
        return self._n_dead

    def user_ids(self) -> list[str]:
        return list(self._user_slot)

    def rowid(self, user_id: str) -> int:
        return int(self._slot_rowid[self._user_slot[user_id]])

    def memory_bytes(self) -> int:
        """Bytes of the faiss index (serialised size), a measure of its memory."""
        if self._index is None:
            return 0
        return int(self.runtime.faiss.serialize_index(self._index).nbytes)

    # -- vectors in, vectors out -------------------------------------------------------------
    def _prep(self, vectors: Any) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            if x.ndim == 2 and x.shape[1] == 0:
                raise _no_vectors_error(0)
            raise InvalidInputError(
                f"user vectors must have {self.dim} values, got shape {x.shape}"
            )
        if not np.isfinite(x).all():
            raise InvalidInputError("user vectors contain NaN or infinite values")
        if self.config.metric == "cosine":
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _flat_storage(self) -> np.ndarray | None:
        """A writable view of the stored vectors (flat and hnsw), or None (ivf)."""
        faiss = self.runtime.faiss
        if self._index is None or self.kind == "ivf":
            return None
        flat = self._index if self.kind == "flat" else faiss.downcast_index(self._index.storage)
        n = flat.ntotal
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)

    def vectors(self, user_ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        """(ids, vectors) of the given users (default: every user in the index), as stored."""
        with self._lock:
            ids = list(self._user_slot) if user_ids is None else list(user_ids)
            missing = [u for u in ids if u not in self._user_slot]
            if missing:
                raise NotFoundError(f"not in the index: {missing[:5]}")
            slots = np.array([self._user_slot[u] for u in ids], dtype=np.int64)
            if not len(slots):
                return ids, np.zeros((0, self.dim), dtype=np.float32)
            storage = self._flat_storage()
            if storage is not None:
                return ids, np.array(storage[slots])
            return ids, np.asarray(self._index.reconstruct_batch(slots), dtype=np.float32)

    # -- updates -----------------------------------------------------------------------------
    def add(
        self,
        user_ids: Sequence[str],
        vectors: Any,
        rowids: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        """Add users, replacing the vectors of those already present (upsert).

        ``rowids`` are the store rows the vectors come from (kept for :meth:`remove_rowids`).
        """
        x = self._prep(vectors)
        ids = list(user_ids)
        if len(ids) != len(x):
            raise InvalidInputError(f"{len(ids)} user ids for {len(x)} vectors")
        rows = (
            np.full(len(ids), -1, dtype=np.int64)
            if rowids is None
            else np.asarray(rowids, dtype=np.int64)
        )
        last = {u: i for i, u in enumerate(ids)}  # a user given twice: the last vector wins
        if len(last) < len(ids):
            keep = np.array(sorted(last.values()), dtype=np.int64)
            ids, x, rows = [ids[i] for i in keep], x[keep], rows[keep]
        if not ids:
            return
        with self._lock:
            self._kill([self._user_slot[u] for u in ids if u in self._user_slot])
            built = self._index is None
            if built:
                self.kind = self.recommended_kind(len(ids))
                self._index = self._new_index(self.kind, x)
            self._append(ids, x, rows)
            if built:
                hnsw_headroom(self._index, self.runtime.faiss)
            self._maintain()

    def _append(self, ids: list[str], x: np.ndarray, rows: np.ndarray) -> None:
        start = self.n_slots
        slots = np.arange(start, start + len(ids), dtype=np.int64)
        if self.kind == "ivf":
            self._index.add_with_ids(x, slots)
        else:
            self._index.add(x)
        self._slot_user.extend(ids)
        self._slot_rowid = np.concatenate([self._slot_rowid, rows.astype(np.int64)])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), dtype=bool)])
        self._user_slot.update(zip(ids, slots.tolist()))
        self._selector = None
        self._mirror = None

    def remove(self, user_ids: Iterable[str]) -> int:
        """Remove users; returns how many were present."""
        with self._lock:
            slots = [self._user_slot[u] for u in dict.fromkeys(user_ids) if u in self._user_slot]
            self._kill(slots)
            if slots:
                self._maintain()
            return len(slots)

    def remove_rowids(self, rowids: Iterable[int]) -> int:
        """Remove the users whose vectors came from these store rows (syncing with the store)."""
        wanted = np.fromiter(rowids, dtype=np.int64)
        with self._lock:
            if not len(wanted) or not len(self._slot_rowid):
                return 0
            slots = np.nonzero(np.isin(self._slot_rowid, wanted) & self._alive)[0]
            return self.remove(
                [u for u in (self._slot_user[s] for s in slots.tolist()) if u is not None]
            )

    def _kill(self, slots: Sequence[int]) -> None:
        if not len(slots):
            return
        arr = np.asarray(slots, dtype=np.int64)
        for s in arr.tolist():
            user = self._slot_user[s]
            if user is not None:
                del self._user_slot[user]
            self._slot_user[s] = None
        self._alive[arr] = False
        self._slot_rowid[arr] = -1
        self._selector = None
        self._mirror = None
        if self.kind == "ivf":
            self._index.remove_ids(arr)  # ivf removes rows for real: no tombstones
            return
        self._n_dead += len(arr)
        self._scrub(arr)

    def _scrub(self, slots: np.ndarray) -> None:
        """Overwrite removed users' stored vectors: zeros (flat), the nearest live vector (hnsw)."""
        storage = self._flat_storage()
        if storage is None:
            return
        if self.kind == "flat" or not self._user_slot:
            storage[slots] = 0.0
            return
        _, nearest = self._raw_search(np.array(storage[slots]), 1)
        for s, nb in zip(slots.tolist(), nearest[:, 0].tolist()):
            storage[s] = storage[nb] if nb >= 0 else 0.0

    def _maintain(self) -> None:
        """Compact when tombstones pile up; with kind=auto, switch kind when the size crossed the
        threshold (back to flat only below half of it, so a population at the edge does not flap)."""
        n = len(self._user_slot)
        want = self.kind
        if self.config.kind == "auto":
            rec = self.recommended_kind(n)
            if rec != self.kind and (self.kind == "flat" or n < self.config.approximate_above // 2):
                want = rec
        many_dead = self._n_dead > 64 and self._n_dead > self.config.compact_fraction * self.n_slots
        if want != self.kind or many_dead:
            self.rebuild(want)

    def rebuild(self, kind: str | None = None) -> None:
        """Rebuild the faiss index from the live vectors (drops tombstones; ``kind`` may change it)."""
        with self._lock:
            ids, x = self.vectors()
            rows = (
                self._slot_rowid[np.array([self._user_slot[u] for u in ids], dtype=np.int64)]
                if ids
                else np.zeros(0, dtype=np.int64)
            )
            self._reset()
            self.kind = kind or self.recommended_kind(len(ids))
            if ids:
                self._index = self._new_index(self.kind, x)
                self._append(ids, x, rows)
                hnsw_headroom(self._index, self.runtime.faiss)

    # -- search ------------------------------------------------------------------------------
    def _live_selector(self) -> Any:
        if self._selector is None:
            bitmap = np.packbits(self._alive, bitorder="little")
            sel = self.runtime.faiss.IDSelectorBitmap(
                len(self._alive), self.runtime.faiss.swig_ptr(bitmap)
            )
            self._selector = (sel, bitmap)  # the selector points into bitmap: keep both alive
        return self._selector[0]

    def _searchable(self) -> Any:
        if not self.runtime.on_gpu:
            return self._index
        if self._mirror is None:
            if self._n_dead:
                self.rebuild(self.kind)  # GPU indexes take no selector: drop tombstones first
            self._mirror = self.runtime.to_device(self._index)
            if self.kind == "ivf":
                self._mirror.nprobe = self._index.nprobe
        return self._mirror

    def _raw_search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss search: (distances, slots), -1 where fewer than k live users exist."""
        faiss = self.runtime.faiss
        index = self._searchable()
        if self.runtime.on_gpu:
            return index.search(x, k)
        sel = self._live_selector() if self._n_dead else None
        if self.config.search_threads and len(x) < 16:
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(self.config.search_threads)
            try:
                return self._cpu_search(index, x, k, sel)
            finally:
                faiss.omp_set_num_threads(before)
        return self._cpu_search(index, x, k, sel)

    def _cpu_search(
        self, index: Any, x: np.ndarray, k: int, sel: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = self.runtime.faiss
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.config.hnsw_ef_search, k + 1)
        elif self.kind == "ivf":
            params = faiss.SearchParametersIVF()
            params.nprobe = index.nprobe
        else:
            params = faiss.SearchParameters() if sel is not None else None
        if sel is not None:
            params.sel = sel
        return index.search(x, k, params=params) if params is not None else index.search(x, k)

    def _distance(self, raw: float) -> float:
        if self.config.metric == "ip":
            return -raw
        if self.config.metric == "cosine":
            return 1.0 - raw
        return raw

    def search(
        self, queries: Any, k: int = 10, *, exclude: Sequence[str | None] | None = None
    ) -> list[list[SimilarUser]]:
        """The ``k`` nearest users of each query vector, closest first (``exclude[i]`` is left out
        of query i's answer, e.g. the querying user)."""
        if int(k) < 1:
            raise InvalidInputError("k must be at least 1")
        x = self._prep(queries)
        exclude = list(exclude) if exclude is not None else [None] * len(x)
        with self._lock:
            if not self._user_slot:
                return [[] for _ in range(len(x))]
            want = min(
                int(k) + (1 if any(e is not None for e in exclude) else 0), len(self._user_slot)
            )
            dist, slots = self._raw_search(x, want)
            out = []
            for i in range(len(x)):
                row = []
                for d, s in zip(dist[i].tolist(), slots[i].tolist()):
                    user = self._slot_user[s] if s >= 0 else None
                    if user is None or user == exclude[i]:
                        continue
                    row.append(SimilarUser(user, self._distance(d)))
                out.append(row[: int(k)])
            return out

    def search_user(self, user_id: str, k: int = 10) -> list[SimilarUser]:
        """The ``k`` users nearest to an indexed user (not counting them)."""
        with self._lock:
            if user_id not in self._user_slot:
                raise NotFoundError(f"user {user_id!r} is not in the index")
            _, vec = self.vectors([user_id])
            return self.search(vec, k, exclude=[user_id])[0]

    def exact_search(self, queries: Any, k: int = 10) -> list[list[str]]:
        """Brute-force nearest users over the live vectors: the ground truth for recall."""
        faiss = self.runtime.faiss
        x = self._prep(queries)
        with self._lock:
            ids, vecs = self.vectors()
        flat = (
            faiss.IndexFlatIP(self.dim)
            if self.config.metric in ("ip", "cosine")
            else faiss.IndexFlatL2(self.dim)
        )
        if len(vecs):
            flat.add(vecs)
        _, nn = flat.search(x, min(k, max(len(ids), 1)))
        return [[ids[j] for j in row if j >= 0] for row in nn.tolist()]

    def recall_at_k(self, queries: Any, k: int = 10) -> float:
        """Mean share of the exact ``k`` nearest users that this index returns (1.0 when exact)."""
        truth = self.exact_search(queries, k)
        got = self.search(queries, k)
        scores = [len(set(t) & {s.user_id for s in g}) / len(t) for t, g in zip(truth, got) if t]
        return float(np.mean(scores)) if scores else 1.0

    # -- persistence (see persistence.py) -----------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the index into the directory ``path`` atomically (faiss file, slot table, meta)."""
        from .persistence import save_index

        return save_index(self, path)

    @staticmethod
    def saved_holds(path: str | Path, user_id: str) -> bool:
        """Whether the index saved at ``path`` has a live entry for ``user_id``."""
        from .persistence import saved_holds

        return saved_holds(path, user_id)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        config: IndexConfig | dict[str, Any] | None = None,
        runtime: FaissRuntime | None = None,
    ) -> ProfileIndex:
        """Read an index written by :meth:`save` (``config`` overrides the saved search options)."""
        from .persistence import load_index

        return load_index(cls, path, config=config, runtime=runtime)
