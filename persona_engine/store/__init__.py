"""The SQLite store: the source of truth for users, items, comparisons, features, models, profiles.

``Store`` takes an injected :class:`sqlite_utils.Database` (or a path) and migrates it in its
constructor. File databases run in WAL mode. Writes go through one lock, so threads of one process
share a single writer path; SQLite's own locking orders writers of different processes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sqlite_utils import Database

from ..errors import NotFoundError, UnknownUserError
from ..schemas import Comparison, ModelRecord, UserProfile
from .base import (
    TABLES,
    StoreBase,
    StoredComparison,
    comparison_rows,
    model_from_row,
    profile_from_row,
    profile_matrix_of,
)
from .base import now_iso as _now
from .changelog import changes
from .migrations import migrations, service_migrations
from .online import (
    OnlineOutcomes,
    complete_outcomes,
    insert_outcomes,
    new_comparison_ids,
    outcome_rows,
)
from .open import open_store
from .read_connections import ReadConnections
from .vectors import from_blob, to_blob

__all__ = ["Store", "StoreBase", "StoredComparison", "migrations", "open_store"]


#: rows of ``comparisons`` probed per item before falling back to one full pass (delete_user)
PROBE_ROWS = 20_000


def _still_referenced(conn: sqlite3.Connection, hashes: Sequence[str]) -> set[str]:
    """Which of ``hashes`` some comparison still references.

    The comparisons table has no index on item hashes, so each item is first looked for among
    the first ``PROBE_ROWS`` comparisons (an item shared by many users turns up at once); the
    items not found there are settled together by one pass over the table.
    """
    used: set[str] = set()
    rest: list[str] = []
    for h in hashes:
        row = conn.execute(
            "SELECT 1 FROM (SELECT prompt_hash p, chosen_hash c, rejected_hash r FROM comparisons LIMIT ?1) "
            "WHERE p=?2 OR c=?2 OR r=?2 LIMIT 1",
            (PROBE_ROWS, h),
        ).fetchone()
        (used.add if row else rest.append)(h)
    for i in range(0, len(rest), 300):
        chunk = rest[i : i + 300]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT prompt_hash, chosen_hash, rejected_hash FROM comparisons "
            f"WHERE prompt_hash IN ({marks}) OR chosen_hash IN ({marks}) OR rejected_hash IN ({marks})",
            chunk * 3,
        ).fetchall()
        used.update(h for r in rows for h in r)
    return used


class Store(StoreBase):
    """The SQLite store (the default): one file under the user directory, or in memory."""

    def __init__(self, db: Database | str | Path | None = None):
        if db is None:
            self.db = Database(memory=True)
        elif isinstance(db, Database):
            self.db = db
        else:
            Path(db).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(db), check_same_thread=False, timeout=30.0, isolation_level=None
            )
            self.db = Database(conn)
        self._lock = threading.RLock()
        self._configure()
        migrations.apply(self.db)
        service_migrations.apply(self.db)
        self._readers = None if self.path == ":memory:" else ReadConnections(self.path)

    def _configure(self) -> None:
        conn = self.db.conn
        if conn.isolation_level is not None:
            conn.isolation_level = None  # we open transactions explicitly
        is_memory = conn.execute("PRAGMA database_list").fetchone()[2] == ""
        if not is_memory:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")

    @property
    def path(self) -> str:
        return self.db.conn.execute("PRAGMA database_list").fetchone()[2] or ":memory:"

    @property
    def location(self) -> str:
        return self.path

    @property
    def database(self) -> str:
        return self.path

    def close(self) -> None:
        if self._readers is not None:
            self._readers.close()
        self.db.close()

    def set_durability(self, full: bool) -> None:
        with self._lock:
            self.db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """On this thread's read-only connection (an in-memory store has one connection: then
        on it, under the write lock)."""
        if self._readers is None:
            with self._lock:
                return self.db.conn.execute(sql, params).fetchall()
        return self._readers.query(sql, params)

    def try_lock(self, name: str) -> Callable[[], None] | None:
        """An ``flock`` on ``<file>.<name>.lock`` beside the database (in memory: per process)."""
        if self._readers is None:
            return super().try_lock(name)
        import fcntl

        fd = os.open(f"{self.path}.{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return lambda: os.close(fd)  # closing the descriptor drops the lock

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error)."""
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.db.conn.execute(sql, params)
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row)) for row in cur.fetchall()]

    # -- users -------------------------------------------------------------------------------
    def upsert_user(
        self, user_id: str, *, attributes: dict[str, Any] | None = None, tenant: str = ""
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO users(id, tenant, attributes, created_at) VALUES (?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET attributes=CASE WHEN ?='{}' THEN users.attributes ELSE excluded.attributes END",
                (
                    user_id,
                    tenant,
                    json.dumps(attributes or {}),
                    _now(),
                    json.dumps(attributes or {}),
                ),
            )

    def user(self, user_id: str) -> dict[str, Any]:
        rows = self._query("SELECT * FROM users WHERE id=?", (user_id,))
        if not rows:
            raise UnknownUserError(f"unknown user {user_id!r}")
        row = dict(rows[0])
        row["attributes"] = json.loads(row["attributes"])
        row["n_comparisons"] = self.count_comparisons(user_id)
        return row

    def has_user(self, user_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM users WHERE id=?", (user_id,)))

    def user_ids(self, tenant: str | None = None) -> list[str]:
        if tenant is None:
            return [r["id"] for r in self._query("SELECT id FROM users ORDER BY id")]
        return [
            r["id"]
            for r in self._query("SELECT id FROM users WHERE tenant=? ORDER BY id", (tenant,))
        ]

    def user_attributes(self) -> dict[str, dict[str, Any]]:
        return {
            r["id"]: json.loads(r["attributes"])
            for r in self._query("SELECT id, attributes FROM users")
        }

    def delete_user(self, user_id: str) -> dict[str, int]:
        """Remove the user and everything about them. Items shared with others stay.

        Only the user's own items are checked for other references (see
        :func:`_still_referenced`), not every item of the store. That check is exact and runs
        under the write lock, so SQLite's own foreign-key check (a scan of the comparisons per
        deleted item: the item columns have no index) is switched off for this transaction.
        """
        with self._lock:
            self.db.conn.execute("PRAGMA foreign_keys=OFF")
            try:
                return self._delete_user(user_id)
            finally:
                self.db.conn.execute("PRAGMA foreign_keys=ON")
                self.feature_memo.clear()

    def _delete_user(self, user_id: str) -> dict[str, int]:
        with self.transaction() as conn:
            own = {
                h
                for row in conn.execute(
                    "SELECT prompt_hash, chosen_hash, rejected_hash FROM comparisons WHERE user_id=?",
                    (user_id,),
                ).fetchall()
                for h in row
            }
            outcomes = conn.execute(
                "DELETE FROM online_eval WHERE comparison_id IN "
                "(SELECT id FROM comparisons WHERE user_id=?)",
                (user_id,),
            ).rowcount
            counts = {
                "online_outcomes": outcomes,
                "comparisons": conn.execute(
                    "DELETE FROM comparisons WHERE user_id=?", (user_id,)
                ).rowcount,
                "profiles": conn.execute(
                    "DELETE FROM profiles WHERE user_id=?", (user_id,)
                ).rowcount,
                "users": conn.execute("DELETE FROM users WHERE id=?", (user_id,)).rowcount,
            }
            # the user's items (and their cached features) that no other comparison references
            candidates = sorted(own)
            still_used = _still_referenced(conn, candidates)
            orphans = [h for h in candidates if h not in still_used]
            for i in range(0, len(orphans), 500):
                chunk = orphans[i : i + 500]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM features WHERE hash IN ({marks})", chunk)
                conn.execute(f"DELETE FROM features WHERE prompt_hash IN ({marks})", chunk)
                conn.execute(f"DELETE FROM items WHERE hash IN ({marks})", chunk)
            counts["items"] = len(orphans)
        return counts

    # -- comparisons -------------------------------------------------------------------------
    def add_comparisons(
        self,
        comparisons: Iterable[Comparison],
        *,
        tenant: str = "",
        outcomes: OnlineOutcomes | None = None,
    ) -> tuple[int, int]:
        """Store comparisons in one transaction. Returns (added, already present).

        Idempotent: a comparison already stored (same user, prompt, chosen, rejected) is skipped.
        Each distinct text is hashed once per call and an empty ``meta`` is not re-serialised, so
        large batches over a shared item pool go in at executemany speed. ``outcomes`` (online
        evaluation, :mod:`persona_engine.online`) are stored in the same transaction, each only
        when this call stored its comparison: a re-sent comparison is never scored twice.
        """
        comps = list(comparisons)
        if not comps:
            return 0, 0
        now = _now()
        items, rows, users = comparison_rows(comps, now, outcomes.text_hashes if outcomes else None)
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO users(id, tenant, attributes, created_at) VALUES (?,?,'{}',?)",
                [(u, tenant, now) for u in users],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO items(hash, kind, text, uri, created_at) VALUES (?,?,?,?,?)",
                list(items.values()),
            )
            if outcomes:
                last = conn.execute("SELECT max(id) FROM comparisons").fetchone()[0] or 0
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO comparisons(user_id, prompt_hash, chosen_hash, rejected_hash, strength, tie, source, meta, created_at) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                rows,
            )
            added = conn.total_changes - before
            if outcomes and added:
                insert_outcomes(conn, outcomes.rows(new_comparison_ids(conn, rows, last, added)))
        return added, len(rows) - added

    _COMPARISON_SELECT = (
        "SELECT c.id, c.user_id, p.text AS prompt, COALESCE(a.text, a.uri) AS chosen, COALESCE(b.text, b.uri) AS rejected, "
        "c.prompt_hash, c.chosen_hash, c.rejected_hash, a.kind AS kind, c.strength, c.tie, c.source, c.created_at "
        "FROM comparisons c JOIN items p ON p.hash=c.prompt_hash JOIN items a ON a.hash=c.chosen_hash "
        "JOIN items b ON b.hash=c.rejected_hash"
    )

    def comparisons(
        self, user_id: str | None = None, *, users: Sequence[str] | None = None
    ) -> list[StoredComparison]:
        """Stored comparisons (of one user, of ``users``, or all), in the order they were stored."""
        if users is not None:
            wanted = [u for u in dict.fromkeys(users) if user_id is None or u == user_id]
            out: list[StoredComparison] = []
            for i in range(0, len(wanted), 900):
                chunk = wanted[i : i + 900]
                marks = ",".join("?" * len(chunk))
                sql = f"{self._COMPARISON_SELECT} WHERE c.user_id IN ({marks}) ORDER BY c.id"
                with self._lock:
                    rows = self.db.conn.execute(sql, chunk).fetchall()
                # columns in field order (see _COMPARISON_SELECT); tie is the 11th
                out.extend(StoredComparison(*r[:10], bool(r[10]), *r[11:]) for r in rows)  # type: ignore[call-arg]
            if len(wanted) > 900:
                out.sort(key=lambda c: c.id)
            return out
        sql, params = self._COMPARISON_SELECT, []
        if user_id is not None:
            sql += " WHERE c.user_id=?"
            params.append(user_id)
        sql += " ORDER BY c.id"
        return [StoredComparison(**{**r, "tie": bool(r["tie"])}) for r in self._query(sql, params)]

    def comparison_keys(
        self, users: Sequence[str]
    ) -> list[tuple[str, str, str, str, float, int, str]]:
        """(user_id, prompt_hash, chosen_hash, rejected_hash, strength, tie, kind) of the
        comparisons of ``users``, in the order they were stored: the columnar fast path for
        re-embedding many users (no texts are read; features come from the cache by hash)."""
        out: list[tuple[str, str, str, str, float, int, str]] = []
        wanted = list(dict.fromkeys(users))
        for i in range(0, len(wanted), 900):
            chunk = wanted[i : i + 900]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                out += self.db.conn.execute(
                    "SELECT c.user_id, c.prompt_hash, c.chosen_hash, c.rejected_hash, c.strength, c.tie, a.kind "
                    f"FROM comparisons c JOIN items a ON a.hash=c.chosen_hash WHERE c.user_id IN ({marks}) ORDER BY c.id",
                    chunk,
                ).fetchall()
        return out

    def complete_outcomes(self, limit: int = 100_000) -> int:
        """Keep the history facts (``n_before``, ``new_items``) of up to ``limit`` outcomes that
        do not have them yet; returns how many (see :mod:`.online`)."""
        with self.transaction() as conn:
            return complete_outcomes(conn, limit)

    def profile_vectors(
        self, model_id: str, users: Sequence[str]
    ) -> dict[str, tuple[np.ndarray, str]]:
        """(vector, source) of each of ``users`` that has a profile under ``model_id``."""
        out: dict[str, tuple[np.ndarray, str]] = {}
        wanted = list(dict.fromkeys(users))
        for i in range(0, len(wanted), 900):
            chunk = wanted[i : i + 900]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self.db.conn.execute(
                    "SELECT user_id, dim, vector, source FROM profiles "
                    f"WHERE model_id=? AND user_id IN ({marks})",
                    [model_id, *chunk],
                ).fetchall()
            for user_id, dim, blob, source in rows:
                out[user_id] = (from_blob(blob, dim), source)
        return out

    def online_outcomes(
        self,
        *,
        model_id: str | None = None,
        since: str | None = None,
        tenant: str | None = None,
        user_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored online-evaluation outcomes, oldest first (filters combine)."""
        with self._lock:
            return outcome_rows(
                self.db.conn, model_id=model_id, since=since, tenant=tenant, user_id=user_id
            )

    def count_comparisons(self, user_id: str | None = None) -> int:
        if user_id is None:
            return int(self._query("SELECT count(*) AS n FROM comparisons")[0]["n"])
        return int(
            self._query("SELECT count(*) AS n FROM comparisons WHERE user_id=?", (user_id,))[0]["n"]
        )

    def comparison_counts(self) -> dict[str, int]:
        return {
            r["user_id"]: r["n"]
            for r in self._query("SELECT user_id, count(*) AS n FROM comparisons GROUP BY user_id")
        }

    def item_texts(self, hashes: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(hashes), 900):
            chunk = list(hashes[i : i + 900])
            marks = ",".join("?" * len(chunk))
            for r in self._query(
                f"SELECT hash, COALESCE(text, uri) AS t FROM items WHERE hash IN ({marks})", chunk
            ):
                out[r["hash"]] = r["t"]
        return out

    # -- feature cache -----------------------------------------------------------------------
    def get_pair_features(
        self, encoder: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], np.ndarray]:
        """Cached features by ``(prompt_hash, hash)``: a (prompt, response) pair of an encoder that
        reads the prompt, ``("", hash)`` for a text on its own, ``(prompt_hash, "")`` for a prompt
        alone under an encoder that reads prompts."""
        out: dict[tuple[str, str], np.ndarray] = {}
        by_prompt: dict[str, list[str]] = {}
        for p, h in keys:
            by_prompt.setdefault(p, []).append(h)
        for p, hashes in by_prompt.items():
            hashes = list(dict.fromkeys(hashes))
            for i in range(0, len(hashes), 900):
                chunk = hashes[i : i + 900]
                marks = ",".join("?" * len(chunk))
                for r in self._query(
                    "SELECT hash, dim, vector FROM features "
                    f"WHERE encoder=? AND prompt_hash=? AND hash IN ({marks})",
                    [encoder, p, *chunk],
                ):
                    out[(p, r["hash"])] = from_blob(r["vector"], r["dim"])
        return out

    def put_pair_features(self, encoder: str, vectors: dict[tuple[str, str], np.ndarray]) -> None:
        if not vectors:
            return
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO features(encoder, prompt_hash, hash, dim, vector) "
                "VALUES (?,?,?,?,?)",
                [(encoder, p, h, int(v.shape[0]), to_blob(v)) for (p, h), v in vectors.items()],
            )

    def count_features(self, encoder: str | None = None) -> int:
        if encoder is None:
            return int(self._query("SELECT count(*) AS n FROM features")[0]["n"])
        return int(
            self._query("SELECT count(*) AS n FROM features WHERE encoder=?", (encoder,))[0]["n"]
        )

    # -- model registry ----------------------------------------------------------------------
    def next_model_version(self, backend: str) -> int:
        row = self._query("SELECT max(version) AS v FROM models WHERE backend=?", (backend,))
        return int(row[0]["v"] or 0) + 1

    def add_model(
        self, record: ModelRecord, *, activate: bool = True, files: Path | None = None
    ) -> ModelRecord:
        """Register a version; its files stay on disk at ``record.path`` (``files`` is unused)."""
        with self.transaction() as conn:
            if activate:
                conn.execute("UPDATE models SET active=0 WHERE backend=?", (record.backend,))
            conn.execute(
                "INSERT INTO models(id, backend, version, path, encoder, config, data, metrics, trained_at, active) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    record.id,
                    record.backend,
                    record.version,
                    record.path,
                    record.encoder,
                    json.dumps(record.config),
                    json.dumps(record.data),
                    json.dumps(record.metrics),
                    record.trained_at.isoformat(),
                    int(activate),
                ),
            )
        return record.model_copy(update={"active": activate})

    def set_model_metrics(self, model_id: str, metrics: dict[str, Any]) -> None:
        self.model(model_id)  # unknown ids: NotFoundError
        with self.transaction() as conn:
            conn.execute("UPDATE models SET metrics=? WHERE id=?", (json.dumps(metrics), model_id))

    def models(self, backend: str | None = None) -> list[ModelRecord]:
        if backend is None:
            rows = self._query("SELECT * FROM models ORDER BY trained_at, version")
        else:
            rows = self._query("SELECT * FROM models WHERE backend=? ORDER BY version", (backend,))
        return [model_from_row(r) for r in rows]

    def model(self, model_id: str) -> ModelRecord:
        rows = self._query("SELECT * FROM models WHERE id=?", (model_id,))
        if not rows:
            raise NotFoundError(f"unknown model {model_id!r}")
        return model_from_row(rows[0])

    def active_model(self, backend: str | None = None) -> ModelRecord | None:
        """The active model of ``backend``; without one, the most recently trained active model."""
        if backend is None:
            rows = self._query(
                "SELECT * FROM models WHERE active=1 ORDER BY trained_at DESC, rowid DESC LIMIT 1"
            )
        else:
            rows = self._query(
                "SELECT * FROM models WHERE active=1 AND backend=? LIMIT 1", (backend,)
            )
        return model_from_row(rows[0]) if rows else None

    def activate_model(self, model_id: str) -> None:
        rec = self.model(model_id)
        with self.transaction() as conn:
            conn.execute("UPDATE models SET active=0 WHERE backend=?", (rec.backend,))
            conn.execute("UPDATE models SET active=1 WHERE id=?", (model_id,))

    # -- profiles ----------------------------------------------------------------------------
    def put_profiles(self, profiles: Iterable[UserProfile]) -> int:
        rows = []
        for p in profiles:
            rows.append(
                (
                    p.user_id,
                    p.model_id,
                    p.backend,
                    len(p.vector),
                    to_blob(p.vector),
                    None if p.uncertainty is None else to_blob(p.uncertainty),
                    None if p.weights is None else json.dumps(p.weights),
                    p.n_comparisons,
                    p.source,
                    p.created_at.isoformat(),
                    p.updated_at.isoformat(),
                )
            )
        if not rows:
            return 0
        now = _now()
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO users(id, tenant, attributes, created_at) VALUES (?, '', '{}', ?)",
                [(r[0], now) for r in rows],
            )
            conn.executemany(
                "INSERT INTO profiles(user_id, model_id, backend, dim, vector, uncertainty, weights, n_comparisons, source, created_at, updated_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(user_id, model_id) DO UPDATE SET "
                "vector=excluded.vector, dim=excluded.dim, uncertainty=excluded.uncertainty, weights=excluded.weights, "
                "n_comparisons=excluded.n_comparisons, source=excluded.source, updated_at=excluded.updated_at",
                rows,
            )
        return len(rows)

    def profile(self, user_id: str, model_id: str) -> UserProfile | None:
        rows = self._query(
            "SELECT * FROM profiles WHERE user_id=? AND model_id=?", (user_id, model_id)
        )
        return profile_from_row(rows[0]) if rows else None

    def profiles(self, model_id: str) -> list[UserProfile]:
        return [
            profile_from_row(r)
            for r in self._query(
                "SELECT * FROM profiles WHERE model_id=? ORDER BY user_id", (model_id,)
            )
        ]

    def profile_model_ids(self, user_id: str) -> list[str]:
        sql = "SELECT model_id FROM profiles WHERE user_id=? ORDER BY model_id"
        return [r["model_id"] for r in self._query(sql, (user_id,))]

    def profile_users(self, model_id: str, *, without: str | None = None) -> list[str]:
        if without is None:
            sql, params = (
                "SELECT user_id FROM profiles WHERE model_id=? ORDER BY user_id",
                [model_id],
            )
        else:
            sql = (
                "SELECT user_id FROM profiles WHERE model_id=? AND user_id NOT IN "
                "(SELECT user_id FROM profiles WHERE model_id=?) ORDER BY user_id"
            )
            params = [model_id, without]
        return [r["user_id"] for r in self._query(sql, params)]

    def profile_rows(
        self, model_id: str, rowids: Sequence[int] | None = None
    ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(store row ids, user ids, float32 matrix) of one model's profiles (or of ``rowids``).

        A row id names a profile row for as long as it exists (upserts keep it), which lets an
        index follow the store's change log (:mod:`persona_engine.retrieval.sync`).
        """
        sql = "SELECT rowid, user_id, dim, vector FROM profiles WHERE model_id=?"
        raw: list[Any] = []
        with self._lock:
            if rowids is None:
                raw = self.db.conn.execute(sql + " ORDER BY user_id", (model_id,)).fetchall()
            else:
                wanted = [int(r) for r in rowids]
                for i in range(0, len(wanted), 900):
                    chunk = wanted[i : i + 900]
                    marks = ",".join("?" * len(chunk))
                    raw += self.db.conn.execute(
                        f"{sql} AND rowid IN ({marks})", [model_id, *chunk]
                    ).fetchall()
        return profile_matrix_of(model_id, raw)

    def count_profiles(self, model_id: str | None = None) -> int:
        if model_id is None:
            return int(self._query("SELECT count(*) AS n FROM profiles")[0]["n"])
        sql = "SELECT count(*) AS n FROM profiles WHERE model_id=?"
        return int(self._query(sql, (model_id,))[0]["n"])

    @contextmanager
    def read_snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside it sees the same state of the database."""
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def delete_profile(self, user_id: str, model_id: str | None = None) -> int:
        with self.transaction() as conn:
            if model_id is None:
                return conn.execute("DELETE FROM profiles WHERE user_id=?", (user_id,)).rowcount
            return conn.execute(
                "DELETE FROM profiles WHERE user_id=? AND model_id=?", (user_id, model_id)
            ).rowcount

    # -- the profile change log -------------------------------------------------------------
    def install_change_log(self) -> None:
        with self._lock:
            changes.apply(self.db)

    def change_log_head(self) -> int:
        with self._lock:
            row = self.db.conn.execute("SELECT max(seq) FROM profile_changes").fetchone()
        return int(row[0] or 0)

    def change_log_pruned_through(self) -> int:
        sql = "SELECT through FROM profile_changes_pruned WHERE id=1"
        with self._lock:
            row = self.db.conn.execute(sql).fetchone()
        return int(row[0]) if row else 0

    def changed_profile_rows(self, model_id: str, after: int, through: int) -> list[int]:
        with self._lock:
            rows = self.db.conn.execute(
                "SELECT DISTINCT row_id FROM profile_changes "
                "WHERE seq > ? AND seq <= ? AND model_id = ?",
                (after, through, model_id),
            ).fetchall()
        return [r[0] for r in rows]

    def prune_change_log_through(self, seq: int) -> int:
        with self.transaction() as conn:
            n = conn.execute("DELETE FROM profile_changes WHERE seq <= ?", (seq,)).rowcount
            conn.execute("UPDATE profile_changes_pruned SET through=? WHERE id=1", (seq,))
        return int(n)

    # -- API keys ----------------------------------------------------------------------------
    def add_api_key(
        self, key_id: str, digest: str, *, tenant: str = "", name: str = "", created_at: str
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO api_keys(id, hash, tenant, name, created_at) VALUES (?,?,?,?,?)",
                (key_id, digest, tenant, name, created_at),
            )

    def revoke_api_key(self, key_id: str, at: str) -> int:
        with self.transaction() as conn:
            return int(
                conn.execute(
                    "UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                    (at, key_id),
                ).rowcount
            )

    # -- status ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        counts = {t: self.db[t].count for t in TABLES}
        return {
            "path": self.path,
            "counts": counts,
            "migrations": [m.name for m in migrations.applied(self.db)],
        }

    def integrity_check(self) -> str:
        return str(self._query("PRAGMA integrity_check")[0]["integrity_check"])
