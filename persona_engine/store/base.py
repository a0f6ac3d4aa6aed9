"""The store interface: what every store (SQLite, PostgreSQL) provides to the rest of the engine.

Callers use these methods only; SQL, its dialect and its locking live in each store's module
(:mod:`persona_engine.store` for SQLite, :mod:`persona_engine.store.postgres`). Both pass one
conformance suite (``tests/store/test_store_conformance.py``).
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NotFoundError
from ..schemas import Comparison, ModelRecord, UserProfile, content_hash, utcnow
from .memo import FeatureMemo
from .online import OnlineOutcomes
from .vectors import from_blob

#: tables every store holds, in the order ``status()`` counts them
TABLES = ("users", "items", "comparisons", "features", "models", "profiles", "online_eval")
_KEY_COLUMNS = "id, hash, tenant, name, created_at, revoked_at"
#: the per-process locks of :meth:`StoreBase.try_lock`'s default
_LOCAL_LOCKS: dict[tuple[int, str], threading.Lock] = {}
_LOCAL_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class StoredComparison:
    id: int
    user_id: str
    prompt: str
    chosen: str
    rejected: str
    prompt_hash: str
    chosen_hash: str
    rejected_hash: str
    kind: str
    strength: float
    tie: bool
    source: str
    created_at: str


def now_iso() -> str:
    return utcnow().isoformat()


#: an item row: (hash, kind, text, uri, created_at)
ItemRow = tuple[str, str, str | None, str | None, str]
#: a comparison row: (user, prompt hash, chosen hash, rejected hash, strength, tie, source, meta, created_at)
ComparisonRow = tuple[str, str, str, str, float, int, str, str, str]


def comparison_rows(
    comps: Sequence[Comparison], now: str, known: Mapping[str, str] | None = None
) -> tuple[dict[str, ItemRow], list[ComparisonRow], set[str]]:
    """(items by hash, comparison rows, user ids) of a batch, for any store to insert.

    Each distinct text is hashed once per call (``known``: text -> hash already computed, e.g. by
    online evaluation) and an empty ``meta`` is not re-serialised, so large batches over a shared
    item pool are cheap to prepare.
    """
    items: dict[str, ItemRow] = {}
    text_hashes: dict[str, str] = {}
    image_hashes: dict[str, str] = {}
    given = known or {}

    def text_hash(text: str) -> str:
        h = text_hashes.get(text)
        if h is None:
            h = text_hashes[text] = given.get(text) or content_hash(text)
            items[h] = (h, "text", text, None, now)
        return h

    def image_hash(uri: str) -> str:
        h = image_hashes.get(uri)
        if h is None:
            h = image_hashes[uri] = content_hash("image:" + uri)
            items[h] = (h, "image", None, uri, now)
        return h

    rows: list[ComparisonRow] = []
    users = set()
    for c in comps:
        item_hash = text_hash if c.kind == "text" else image_hash
        users.add(c.user_id)
        rows.append(
            (
                c.user_id,
                text_hash(c.prompt),
                item_hash(c.chosen),
                item_hash(c.rejected),
                c.strength,
                int(c.tie),
                c.source,
                json.dumps(c.meta) if c.meta else "{}",
                now,
            )
        )
    return items, rows, users


def model_from_row(r: dict[str, Any]) -> ModelRecord:
    return ModelRecord(
        id=r["id"],
        backend=r["backend"],
        version=r["version"],
        path=r["path"],
        encoder=r["encoder"],
        config=json.loads(r["config"]),
        data=json.loads(r["data"]),
        metrics=json.loads(r["metrics"]),
        trained_at=datetime.fromisoformat(r["trained_at"]),
        active=bool(r["active"]),
    )


def profile_from_row(r: dict[str, Any]) -> UserProfile:
    return UserProfile(
        user_id=r["user_id"],
        model_id=r["model_id"],
        backend=r["backend"],
        vector=from_blob(r["vector"], r["dim"]).tolist(),
        uncertainty=None if r["uncertainty"] is None else from_blob(r["uncertainty"]).tolist(),
        weights=None if r["weights"] is None else json.loads(r["weights"]),
        n_comparisons=r["n_comparisons"],
        source=r["source"],
        created_at=datetime.fromisoformat(r["created_at"]),
        updated_at=datetime.fromisoformat(r["updated_at"]),
    )


def profile_matrix_of(
    model_id: str, raw: Sequence[tuple[int, str, int, bytes]]
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(row ids, user ids, float32 matrix) from (row id, user id, dim, vector blob) rows."""
    if not raw:
        return np.zeros(0, dtype=np.int64), [], np.zeros((0, 0), dtype=np.float32)
    dims = {r[2] for r in raw}
    if len(dims) != 1:
        raise ValueError(f"profiles of model {model_id!r} have vectors of lengths {sorted(dims)}")
    dim = dims.pop()
    blob = b"".join(bytes(r[3]) for r in raw)
    mat = np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(len(raw), dim)
    return np.array([r[0] for r in raw], dtype=np.int64), [r[1] for r in raw], mat


class StoreBase(ABC):
    """Users, items, comparisons, the feature cache, models, profiles and online outcomes.

    ``location`` names the store for people (a file path, or a URL without its password).
    """

    @property
    def feature_memo(self) -> FeatureMemo:
        """Recently read features in memory (see :mod:`.memo`); made on first use."""
        memo = self.__dict__.get("_feature_memo")
        if memo is None:
            memo = self.__dict__["_feature_memo"] = FeatureMemo()
        return memo

    #: whether model files live in the store itself (PostgreSQL: every replica reads them from
    #: there) or only on the disk of the process that trained them (SQLite)
    keeps_model_files: bool = False

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    @abstractmethod
    def location(self) -> str: ...

    @property
    @abstractmethod
    def database(self) -> str:
        """What :func:`~persona_engine.store.open_store` takes to open this store from another
        process: a file path, or the URL *with* its password (pass it in the environment, never
        on a command line or in a log)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Any]:
        """One write transaction on this store's own connection (its SQL dialect)."""

    @abstractmethod
    def read_snapshot(self) -> AbstractContextManager[Any]:
        """One read transaction: every store call inside it (same thread) sees the same state."""

    def set_durability(self, full: bool) -> None:
        """Whether a commit also survives power loss (SQLite's ``synchronous=FULL``). The
        default does nothing: PostgreSQL's commits are as durable as its server is configured."""
        return None

    @abstractmethod
    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only statement, on a connection that never waits for the writer
        (SQLite: a read-only connection per thread, WAL; PostgreSQL: one of the pool's). ``?``
        marks a parameter on both stores, so the SQL must be portable between them."""

    def ping(self) -> None:
        """Raise when the store cannot answer a read."""
        self.read("SELECT 1")

    def try_lock(self, name: str) -> Callable[[], None] | None:
        """Take the exclusive lock ``name`` shared by every process on this store, without
        waiting: the function that releases it, or None when another holder has it. A lock dies
        with its process. (The default is per process, for stores no other process opens.)"""
        with _LOCAL_LOCKS_GUARD:
            lock = _LOCAL_LOCKS.setdefault((id(self), name), threading.Lock())
        return lock.release if lock.acquire(blocking=False) else None

    def watch_profile_changes(self, callback: Callable[[], object]) -> Callable[[], None] | None:
        """Call ``callback`` (on a thread of its own) soon after any process commits a change
        to the profiles; returns the function that stops watching, or None where the store
        cannot notify (SQLite: indexes catch up from the change log when they are queried)."""
        return None

    # -- users -------------------------------------------------------------------------------
    def user_tenants(self, user_ids: Sequence[str]) -> dict[str, str]:
        """The tenant of each of ``user_ids`` that exists (reads that never wait for the writer)."""
        ids = list(dict.fromkeys(user_ids))
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out.update(self.read(f"SELECT id, tenant FROM users WHERE id IN ({marks})", chunk))
        return out

    def count_users(self, tenant: str | None = None) -> int:
        if tenant is None:
            return int(self.read("SELECT count(*) FROM users")[0][0])
        return int(self.read("SELECT count(*) FROM users WHERE tenant = ?", (tenant,))[0][0])

    @abstractmethod
    def upsert_user(
        self, user_id: str, *, attributes: dict[str, Any] | None = None, tenant: str = ""
    ) -> None: ...

    @abstractmethod
    def user(self, user_id: str) -> dict[str, Any]: ...

    @abstractmethod
    def has_user(self, user_id: str) -> bool: ...

    @abstractmethod
    def user_ids(self, tenant: str | None = None) -> list[str]: ...

    @abstractmethod
    def user_attributes(self) -> dict[str, dict[str, Any]]: ...

    @abstractmethod
    def delete_user(self, user_id: str) -> dict[str, int]:
        """Remove the user and everything about them; items shared with others stay."""

    # -- comparisons -------------------------------------------------------------------------
    @abstractmethod
    def add_comparisons(
        self,
        comparisons: Iterable[Comparison],
        *,
        tenant: str = "",
        outcomes: OnlineOutcomes | None = None,
    ) -> tuple[int, int]:
        """Store comparisons in one transaction; returns (added, already present)."""

    @abstractmethod
    def comparisons(
        self, user_id: str | None = None, *, users: Sequence[str] | None = None
    ) -> list[StoredComparison]: ...

    @abstractmethod
    def comparison_keys(
        self, users: Sequence[str]
    ) -> list[tuple[str, str, str, str, float, int, str]]: ...

    @abstractmethod
    def complete_outcomes(self, limit: int = 100_000) -> int:
        """Keep the history facts of up to ``limit`` online outcomes that do not have them yet
        (:mod:`.online`); returns how many."""

    def complete_all_outcomes(self, chunk: int = 20_000) -> int:
        """:meth:`complete_outcomes` ``chunk`` at a time (one transaction each) until none is
        left; returns how many."""
        done = 0
        while True:
            n = self.complete_outcomes(chunk)
            done += n
            if n < chunk:
                return done

    @abstractmethod
    def online_outcomes(
        self,
        *,
        model_id: str | None = None,
        since: str | None = None,
        tenant: str | None = None,
        user_id: str | None = None,
    ) -> list[dict[str, Any]]: ...

    def online_margins(self, window: int) -> list[tuple[str, int, np.ndarray]]:
        """Per model version with online outcomes: (id, how many, margins of its last ``window``)."""
        out = []
        for model_id, n in self.read(
            "SELECT model_id, count(*) FROM online_eval GROUP BY model_id"
        ):
            rows = self.read(
                "SELECT margin FROM online_eval WHERE model_id = ? ORDER BY comparison_id DESC LIMIT ?",
                (model_id, int(window)),
            )
            out.append((str(model_id), int(n), np.array([r[0] for r in rows], dtype=np.float64)))
        return out

    @abstractmethod
    def count_comparisons(self, user_id: str | None = None) -> int: ...

    @abstractmethod
    def comparison_counts(self) -> dict[str, int]: ...

    @abstractmethod
    def item_texts(self, hashes: Sequence[str]) -> dict[str, str]: ...

    # -- feature cache -----------------------------------------------------------------------
    def get_features(self, encoder: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached features of texts on their own (``prompt_hash = ''``), by content hash."""
        return {
            h: v for (_, h), v in self.get_pair_features(encoder, [("", h) for h in hashes]).items()
        }

    def put_features(self, encoder: str, vectors: dict[str, np.ndarray]) -> None:
        self.put_pair_features(encoder, {("", h): v for h, v in vectors.items()})

    @abstractmethod
    def get_pair_features(
        self, encoder: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], np.ndarray]: ...

    @abstractmethod
    def put_pair_features(
        self, encoder: str, vectors: dict[tuple[str, str], np.ndarray]
    ) -> None: ...

    @abstractmethod
    def count_features(self, encoder: str | None = None) -> int: ...

    # -- model registry ----------------------------------------------------------------------
    @abstractmethod
    def next_model_version(self, backend: str) -> int: ...

    @abstractmethod
    def add_model(
        self, record: ModelRecord, *, activate: bool = True, files: Path | None = None
    ) -> ModelRecord:
        """Register a version. ``files``: its saved directory, stored with the row (in the same
        transaction) when the store keeps model files; SQLite leaves them on disk."""

    def put_model_files(self, model_id: str, directory: Path) -> None:
        """Store (replace) the files of ``directory`` as ``model_id``'s, where the store keeps
        model files; the default keeps them on disk only."""
        return None

    def model_files_digest(self, model_id: str) -> str | None:
        """A digest of the model files the store holds for ``model_id`` (None: none held, the
        files are at the record's ``path``)."""
        return None

    def write_model_files(self, model_id: str, directory: Path) -> None:
        """Write the stored files of ``model_id`` into the new directory ``directory``."""
        raise NotFoundError(f"{self.location} keeps no model files (model {model_id})")

    @abstractmethod
    def set_model_metrics(self, model_id: str, metrics: dict[str, Any]) -> None: ...

    @abstractmethod
    def models(self, backend: str | None = None) -> list[ModelRecord]: ...

    @abstractmethod
    def model(self, model_id: str) -> ModelRecord: ...

    @abstractmethod
    def active_model(self, backend: str | None = None) -> ModelRecord | None: ...

    @abstractmethod
    def activate_model(self, model_id: str) -> None: ...

    # -- profiles ----------------------------------------------------------------------------
    @abstractmethod
    def put_profiles(self, profiles: Iterable[UserProfile]) -> int: ...

    @abstractmethod
    def profile(self, user_id: str, model_id: str) -> UserProfile | None: ...

    @abstractmethod
    def profiles(self, model_id: str) -> list[UserProfile]: ...

    @abstractmethod
    def profile_model_ids(self, user_id: str) -> list[str]:
        """The model versions the user has a profile under, sorted."""

    @abstractmethod
    def profile_users(self, model_id: str, *, without: str | None = None) -> list[str]:
        """Users with a profile under ``model_id`` (and none under ``without``), sorted."""

    @abstractmethod
    def profile_vectors(
        self, model_id: str, users: Sequence[str]
    ) -> dict[str, tuple[np.ndarray, str]]: ...

    def profile_matrix(self, model_id: str) -> tuple[list[str], np.ndarray]:
        """All profile vectors of one model as (user ids, float32 matrix), for indexing."""
        _, ids, mat = self.profile_rows(model_id)
        return ids, mat

    @abstractmethod
    def profile_rows(
        self, model_id: str, rowids: Sequence[int] | None = None
    ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(store row ids, user ids, float32 matrix) of one model's profiles (or of ``rowids``);
        a row id names a profile row for as long as it exists (upserts keep it)."""

    @abstractmethod
    def count_profiles(self, model_id: str | None = None) -> int: ...

    @abstractmethod
    def delete_profile(self, user_id: str, model_id: str | None = None) -> int: ...

    # -- the profile change log (keeps similar-user indexes in step) -------------------------
    @abstractmethod
    def install_change_log(self) -> None:
        """Create the log and the triggers that append ``(seq, model_id, row_id)`` to it on every
        insert, update and delete of a profile (idempotent)."""

    @abstractmethod
    def change_log_head(self) -> int:
        """The newest ``seq`` (0 when empty); entries never appear below a head once read."""

    @abstractmethod
    def change_log_pruned_through(self) -> int: ...

    @abstractmethod
    def changed_profile_rows(self, model_id: str, after: int, through: int) -> list[int]:
        """Distinct row ids of ``model_id``'s profiles changed with ``after < seq <= through``."""

    @abstractmethod
    def prune_change_log_through(self, seq: int) -> int:
        """Drop entries with ``seq <= seq`` and remember it; returns how many went."""

    # -- API keys of the HTTP service (only their SHA-256 digests) ---------------------------
    @abstractmethod
    def add_api_key(
        self, key_id: str, digest: str, *, tenant: str = "", name: str = "", created_at: str
    ) -> None: ...

    @abstractmethod
    def revoke_api_key(self, key_id: str, at: str) -> int:
        """Mark an unrevoked key revoked; returns 1, or 0 when it is unknown or revoked already."""

    def api_key(self, key_id: str) -> dict[str, Any] | None:
        """The key's row (``hash``, ``tenant``, ``revoked_at``, ...), read without waiting for
        the writer; None when there is none."""
        rows = self.read(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        return dict(zip(_KEY_COLUMNS.split(", "), rows[0])) if rows else None

    def api_keys(self) -> list[dict[str, Any]]:
        rows = self.read(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
        return [dict(zip(_KEY_COLUMNS.split(", "), r)) for r in rows]

    # -- status ------------------------------------------------------------------------------
    @abstractmethod
    def status(self) -> dict[str, Any]: ...

    @abstractmethod
    def integrity_check(self) -> str:
        """``"ok"``, or what is wrong."""
