"""Saving and loading a :class:`~persona_engine.retrieval.index.ProfileIndex`.

A saved index is a directory: ``index.faiss`` (faiss's own format), ``slots.npz`` (user id, store
row id and liveness of every faiss row; removed users' ids are blanked), ``meta.json``, and
``tombstones.jsonl`` while users deleted since the save are pending (:mod:`.tombstones`: loading
applies them). It is written into a temporary directory and swapped in, so a crash never leaves
half an index. The index is locked only while it is copied (``serialize_index``, slot arrays),
not while the copy is written, so searches wait for a memory copy rather than for the disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import NotFoundError
from ..paths import writing_directory
from . import tombstones

if TYPE_CHECKING:
    from .index import IndexConfig, ProfileIndex
    from .runtime import FaissRuntime

INDEX_FORMAT = 1


def save_index(index: ProfileIndex, path: str | Path) -> Path:
    """Write ``index`` to the directory ``path``, carrying over the tombstones of the previous
    copy that this one has not seen (newer than its ``meta["seq"]``)."""
    faiss = index.runtime.faiss
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with index._lock:
        blob = faiss.serialize_index(index._index) if index._index is not None else None
        users = np.array([u if u is not None else "" for u in index._slot_user], dtype=str)
        rowids, alive = index._slot_rowid.copy(), index._alive.copy()
        index.meta["unsaved"] = 0
        seq = int(index.meta.get("seq", -1))
        meta = {
            "format": INDEX_FORMAT,
            "dim": index.dim,
            "kind": index.kind,
            "n_dead": index.n_dead,
            "config": index.config.model_dump(mode="json"),
            "meta": dict(index.meta),
        }
    with writing_directory(path) as tmp:
        if blob is not None:
            blob.tofile(tmp / "index.faiss")
        np.savez(tmp / "slots.npz", users=users, rowids=rowids, alive=alive)
        (tmp / "meta.json").write_text(json.dumps(meta))
        if path.exists():
            tombstones.write_newer(path, tmp, seq)
    return path


def saved_holds(path: str | Path, user_id: str) -> bool:
    """Whether the file of the index saved at ``path`` has a live entry for ``user_id`` (reads
    the slot table only; tombstones not applied: a pending deletion still counts)."""
    slots = np.load(Path(path) / "slots.npz", allow_pickle=False)
    return bool(np.any((slots["users"] == user_id) & slots["alive"]))


def load_index(
    cls: type[ProfileIndex],
    path: str | Path,
    *,
    config: IndexConfig | dict[str, Any] | None = None,
    runtime: FaissRuntime | None = None,
) -> ProfileIndex:
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.exists():
        raise NotFoundError(f"no saved profile index at {path}")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != INDEX_FORMAT:
        raise NotFoundError(
            f"profile index at {path} has format {meta.get('format')}, expected {INDEX_FORMAT}"
        )
    obj = cls(meta["dim"], config if config is not None else meta["config"], runtime=runtime)
    obj.meta = meta.get("meta", {})
    obj.kind = meta["kind"]
    slots = np.load(path / "slots.npz", allow_pickle=False)
    users = slots["users"].tolist()
    obj._alive = slots["alive"].astype(bool)
    obj._slot_rowid = slots["rowids"].astype(np.int64)
    obj._slot_user = [u if alive else None for u, alive in zip(users, obj._alive.tolist())]
    obj._user_slot = {u: i for i, u in enumerate(obj._slot_user) if u is not None}
    obj._n_dead = int(meta.get("n_dead", 0))
    if (path / "index.faiss").exists():
        obj._index = obj.runtime.faiss.read_index(str(path / "index.faiss"))
        from .index import hnsw_headroom

        hnsw_headroom(obj._index, obj.runtime.faiss)  # read back exactly sized
        if obj.kind == "ivf":
            obj._index.nprobe = min(obj.config.ivf_nprobe, obj._index.nlist)
    stones = tombstones.read(path)
    if stones:  # deleted since the save: removed (and scrubbed) before anything can find them
        obj.remove([t.user_id for t in stones])
        obj.remove_rowids([r for t in stones for r in t.rowids])
    return obj
