"""Keeping profile indexes in step with the store (the store stays the source of truth).

Triggers on the ``profiles`` table append ``(seq, model_id, row_id)`` to ``profile_changes`` on
every insert, update and delete, whoever writes: this engine, another process, or a direct
store call (each store implements the log: :meth:`~persona_engine.store.StoreBase.install_change_log`).
An index remembers the last ``seq`` it has seen and applies the rows changed since then, in steps
of :data:`SYNC_STEP` log entries (its lock is free between steps). The log holds row ids, never
user ids or vectors, so a deleted user leaves nothing identifying behind in it.

Who does the work, so that a query never pays for a backlog:

- a query applies at most :data:`QUERY_SYNC_ENTRIES` log entries, and none while another thread is
  syncing that index; it never prunes the log or writes the index to disk;
- the engine, right after its own profile writes (:meth:`ProfileIndexes.after_write`), applies
  everything pending, so a process sees its own writes in its next query;
- a maintenance thread (:mod:`.maintenance`, started by ``Engine.follow_profile_changes``, as
  ``persona serve`` does) applies other processes' writes, prunes the log in chunks, saves indexes
  with many unsaved changes and compacts those with tombstones; without it, each profile write
  prunes at most :data:`WRITE_PRUNE_CHUNK` entries.

Indexes are per model version (``model_id``): vectors of different versions never share one. Each
is saved under ``<home>/indexes/<model_id>/`` after it is built, so a new process loads it and
catches up from the log instead of rebuilding (an HNSW build over 1M users takes minutes).
Deleting a user appends a tombstone there instead of writing the index again (:mod:`.tombstones`).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from ..store import StoreBase
from ..store.changelog import changes
from . import tombstones
from .index import IndexConfig, ProfileIndex

if TYPE_CHECKING:
    from .maintenance import IndexMaintenance

__all__ = ["ProfileIndexes", "changes", "install_change_log", "log_head", "prune_change_log"]

#: how many log entries survive pruning; an index older than the pruned part rebuilds.
LOG_KEEP = 500_000
#: most log entries one prune deletes (a one-shot prune of 500,000 rows took ~0.4 s at 1M users).
PRUNE_CHUNK = 20_000
#: most log entries a query applies; the rest is left to the writer and the maintenance thread.
QUERY_SYNC_ENTRIES = 64
#: log entries applied per step of a sync (the index is locked for one step at a time).
SYNC_STEP = 2_000
#: most log entries a profile write prunes when no maintenance thread runs.
WRITE_PRUNE_CHUNK = 2_000
#: an index is saved again once this share of its users (at least 1,000) changed since its save.
SAVE_FRACTION = 0.1
#: a saved index is compacted once it has this many tombstones ...
TOMBSTONE_BOUND = 100
#: ... or its oldest tombstone is this old (seconds): the privacy window's bound.
TOMBSTONE_MAX_AGE_S = 600.0


def install_change_log(store: StoreBase) -> None:
    """Create the change log and its triggers (idempotent)."""
    store.install_change_log()


def log_head(store: StoreBase) -> int:
    return store.change_log_head()


def _pruned_through(store: StoreBase) -> int:
    return store.change_log_pruned_through()


def _read_int(store: StoreBase, sql: str) -> int:
    rows = store.read(sql)
    return int(rows[0][0] or 0) if rows else 0


def prune_change_log(store: StoreBase, keep: int = LOG_KEEP, chunk: int = PRUNE_CHUNK) -> int:
    """Once the log holds over ``2 * keep`` entries, drop its oldest ones, at most ``chunk`` per
    call and never the newest ``keep``; returns how many went."""
    head = log_head(store)
    through = _pruned_through(store)
    if head - through <= 2 * keep:
        return 0
    cut = min(head - keep, through + max(1, int(chunk)))
    return store.prune_change_log_through(cut)


def _safe_name(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", model_id)


class ProfileIndexes:
    """The profile indexes of one store, one per model version, built and synced on demand.

    :param store: the store whose ``profiles`` table is indexed.
    :param directory: where indexes are saved (None: memory only).
    :param config: :class:`IndexConfig` options for new indexes.
    """

    def __init__(
        self,
        store: StoreBase,
        directory: str | Path | None = None,
        config: IndexConfig | dict[str, Any] | None = None,
    ):
        self.store = store
        self.directory = Path(directory) if directory is not None else None
        self.config = (
            IndexConfig.model_validate(config or {})
            if not isinstance(config, IndexConfig)
            else config
        )
        self._indexes: dict[str, ProfileIndex] = {}
        self._lock = threading.RLock()  # the dict, loading and building
        self._sync_locks: dict[str, threading.Lock] = {}  # one syncing thread per index
        self._disk_lock = threading.Lock()  # saves and tombstone appends
        self._installed = False
        self.maintenance: IndexMaintenance | None = None

    def install(self) -> None:
        if not self._installed:
            install_change_log(self.store)
            self._installed = True

    def path(self, model_id: str) -> Path | None:
        return None if self.directory is None else self.directory / _safe_name(model_id)

    def loaded(self) -> dict[str, ProfileIndex]:
        return dict(self._indexes)

    def _sync_lock(self, model_id: str) -> threading.Lock:
        with self._lock:
            return self._sync_locks.setdefault(model_id, threading.Lock())

    def get(self, model_id: str, dim: int, *, refresh: bool = False) -> ProfileIndex:
        """The index of ``model_id``'s profiles.

        From memory (having applied at most :data:`QUERY_SYNC_ENTRIES` pending log entries), else
        from its saved copy or built from the store, then caught up with the log in full.
        ``refresh=True`` rebuilds it from the store.
        """
        if dim <= 0:
            raise InvalidInputError(
                f"model {model_id} has {dim}-dimensional user vectors: similar-user search and "
                "neighbour priors need a personalized backend (bt has no per-user vector)"
            )
        self.install()
        index = None if refresh else self._indexes.get(model_id)
        if index is not None:
            self.sync(index, budget=QUERY_SYNC_ENTRIES, wait=False)
            return index
        with self._lock:
            index = None if refresh else self._indexes.get(model_id)
            if index is None and not refresh:
                index = self._load_saved(model_id, dim)
            if index is None:
                index = self.build(model_id, dim)
            self._indexes[model_id] = index
            self.sync(index)
            return index

    def _load_saved(self, model_id: str, dim: int) -> ProfileIndex | None:
        path = self.path(model_id)
        if path is None or not (path / "meta.json").exists():
            return None
        try:
            index = ProfileIndex.load(path, config=self.config)
        except Exception:  # a damaged cache: rebuild from the store
            shutil.rmtree(path, ignore_errors=True)
            return None
        if index.dim != dim or index.meta.get("model_id") != model_id:
            return None
        if int(index.meta.get("seq", -1)) < _pruned_through(self.store):
            return None  # changes it missed were pruned from the log
        return index

    def build(self, model_id: str, dim: int) -> ProfileIndex:
        """A new index of every profile of ``model_id`` (one consistent read of the store)."""
        self.install()
        with self.store.read_snapshot():
            seq = log_head(self.store)
            rowids, ids, mat = self.store.profile_rows(model_id)
        index = ProfileIndex(dim, self.config, expected_size=len(ids))
        if ids:
            index.add(ids, mat, rowids)
        index.meta = {"model_id": model_id, "seq": seq, "unsaved": 0}
        self.save(index)
        return index

    def sync(self, index: ProfileIndex, *, budget: int | None = None, wait: bool = True) -> int:
        """Apply the store's profile changes since the index last looked; returns rows re-read.

        ``budget``: apply at most this many log entries (a query's share). ``wait=False``: do
        nothing when another thread is syncing this index. Without a budget, a backlog past
        ``max(10,000, a fifth of the index)`` rows, or one the log no longer holds, rebuilds the
        index from the store (as does a budgeted sync that finds its entries pruned).
        """
        lock = self._sync_lock(index.meta["model_id"])
        if not lock.acquire(blocking=wait):
            return 0
        try:
            return self._sync(index, budget)
        finally:
            lock.release()

    def _sync(self, index: ProfileIndex, budget: int | None) -> int:
        model_id = index.meta["model_id"]
        last = int(index.meta.get("seq", 0))
        head = _read_int(self.store, "SELECT max(seq) FROM profile_changes")
        if head <= last:
            return 0
        if last < _read_int(self.store, "SELECT through FROM profile_changes_pruned WHERE id = 1"):
            self._replace(index, self.build(model_id, index.dim))
            return len(index)
        if budget is not None:
            head = min(head, last + max(1, int(budget)))
        elif head - last > max(10_000, len(index) // 5):
            changed = self.store.changed_profile_rows(model_id, last, head)
            if len(changed) > max(10_000, len(index) // 5):
                self._replace(index, self.build(model_id, index.dim))
                return len(changed)
        n = 0
        while last < head:
            step = min(head, last + SYNC_STEP)
            n += self._apply(index, last, step)
            last = step
        return n

    def _apply(self, index: ProfileIndex, after: int, through: int) -> int:
        """Apply the log entries ``after < seq <= through`` to ``index``."""
        model_id = index.meta["model_id"]
        changed = self.store.changed_profile_rows(model_id, after, through)
        with index._lock:
            if changed:
                rowids, ids, mat = self.store.profile_rows(model_id, changed)
                index.remove_rowids(changed)
                if ids:
                    index.add(ids, mat, rowids)
            index.meta["seq"] = through
            index.meta["unsaved"] = int(index.meta.get("unsaved", 0)) + len(changed)
        return len(changed)

    def sync_loaded(self) -> int:
        """Catch every index in memory up with the log; returns rows re-read."""
        return sum(self.sync(index) for index in self.loaded().values())

    def after_write(self) -> None:
        """On the writer's side, after a profile write of this process: the indexes in memory
        take it in (the next query sees it), and, when no maintenance thread runs, at most
        :data:`WRITE_PRUNE_CHUNK` log entries are pruned."""
        if self._indexes:
            self.sync_loaded()
        if self.maintenance is None and self._installed:
            prune_change_log(self.store, keep=LOG_KEEP, chunk=WRITE_PRUNE_CHUNK)

    def _replace(self, index: ProfileIndex, fresh: ProfileIndex) -> None:
        """Swap ``fresh``'s contents into ``index`` (callers may hold a reference to it)."""
        with index._lock:
            index.__dict__.update({k: v for k, v in fresh.__dict__.items() if k != "_lock"})

    def save(self, index: ProfileIndex) -> None:
        """Write the index to its directory; tombstones it has seen are dropped (a compaction)."""
        path = self.path(index.meta["model_id"])
        if path is None:
            return
        with self._disk_lock:
            index.save(path)

    def saved_models(self) -> dict[str, Path]:
        """Model id -> directory of every saved index."""
        found: dict[str, Path] = {}
        if self.directory is not None and self.directory.is_dir():
            for meta in sorted(self.directory.glob("*/meta.json")):
                found[self._saved_model_id(meta.parent)] = meta.parent
        return found

    def _saved_model_id(self, path: Path) -> str:
        for model_id in self._indexes:
            if self.path(model_id) == path:
                return model_id
        try:
            return str(json.loads((path / "meta.json").read_text())["meta"]["model_id"])
        except (OSError, ValueError, KeyError):
            return path.name

    def purge_user(self, user_id: str) -> list[str]:
        """After a user's rows left the store: drop them from every index in memory at once, and
        append a tombstone (fsynced) to every saved index; returns the model ids whose index in
        memory held the user.

        Privacy window: until that saved index is compacted (:meth:`compact`, run by the
        maintenance thread within :data:`TOMBSTONE_MAX_AGE_S` seconds or
        :data:`TOMBSTONE_BOUND` deletions, or ``persona profile index --compact``), its file
        still holds the user's id and vector, which no search returns (loading applies the
        tombstones); after it, no file under the index directory holds either.
        """
        self.install()
        seq = log_head(self.store)
        touched: dict[str, tuple[int, ...]] = {}
        for model_id, index in self.loaded().items():
            with self._sync_lock(model_id), index._lock:  # no sync step re-adds the user
                if user_id in index:
                    touched[model_id] = (index.rowid(user_id),)
                    index.remove([user_id])
        with self._disk_lock:
            for model_id, path in self.saved_models().items():
                stone = tombstones.Tombstone(user_id, touched.get(model_id, ()), seq)
                tombstones.append(path, [stone])
        return sorted(touched)

    def compact(self, model_id: str | None = None) -> list[str]:
        """Write saved indexes again without the users deleted since (all, or ``model_id``'s),
        after catching them up with the log; returns the model ids compacted. An index not in
        memory is loaded for it and let go again."""
        done = []
        for mid, path in self.saved_models().items():
            if model_id is not None and mid != model_id:
                continue
            index = self._indexes.get(mid)
            if index is None:
                try:
                    index = ProfileIndex.load(path, config=self.config)
                except Exception:  # a damaged cache: rebuilt from the store when needed
                    shutil.rmtree(path, ignore_errors=True)
                    continue
            self.sync(index)
            self.save(index)
            done.append(mid)
        return done

    def maintain(self, prune_seconds: float = 0.5) -> dict[str, int]:
        """One round of upkeep, off the request path: catch the indexes in memory up, prune the
        log (chunks of 5,000 entries for up to ``prune_seconds``), save indexes with many
        unsaved changes, compact saved indexes whose tombstones are due."""
        synced = self.sync_loaded()
        pruned, stop = 0, time.monotonic() + prune_seconds
        if self._installed:
            while time.monotonic() < stop:
                n = prune_change_log(self.store, keep=LOG_KEEP, chunk=5_000)
                if not n:
                    break
                pruned += n
                time.sleep(0.005)  # let writers and queries at the store between chunks
        saved = 0
        for index in self.loaded().values():
            unsaved = int(index.meta.get("unsaved", 0))
            if unsaved > max(1_000, int(SAVE_FRACTION * len(index))):
                self.save(index)
                saved += 1
        due = [
            mid
            for mid, path in self.saved_models().items()
            if tombstones.due(path, TOMBSTONE_BOUND, TOMBSTONE_MAX_AGE_S)
        ]
        compacted = sum(len(self.compact(mid)) for mid in due)
        return {"synced": synced, "pruned": pruned, "saved": saved, "compacted": compacted}

    def start_maintenance(self, interval_s: float = 1.0) -> IndexMaintenance:
        """Run :meth:`maintain` on a thread every ``interval_s`` seconds (and when woken)."""
        from .maintenance import IndexMaintenance

        if self.maintenance is None:
            self.maintenance = IndexMaintenance(self, interval_s)
        return self.maintenance

    def stop_maintenance(self) -> None:
        if self.maintenance is not None:
            self.maintenance.stop()
            self.maintenance = None

    def drop(self, model_id: str) -> None:
        """Forget a model's index (memory and disk)."""
        with self._lock:
            self._indexes.pop(model_id, None)
            path = self.path(model_id)
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
