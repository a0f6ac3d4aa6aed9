"""The PostgreSQL store: the same interface as the SQLite one, for stores shared between processes.

``PostgresStore("postgresql://user:pw@host/db")`` connects through a psycopg 3 connection pool
(the ``postgres`` extra), migrates (:mod:`.postgres_schema`) and answers like
:class:`persona_engine.store.Store`. Connections are autocommit; :meth:`transaction` and
:meth:`read_snapshot` pin one to the calling thread, so every store call inside them (same thread)
runs in that transaction. Batches go in as arrays (``unnest``): one statement per table, whatever
their size. A server that cannot be reached is a :class:`~persona_engine.errors.StoreUnavailableError`
naming the host and database, never the password.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from ..errors import InvalidInputError, NotFoundError, StoreUnavailableError, UnknownUserError
from ..extras import require
from ..schemas import Comparison, ModelRecord, UserProfile
from .base import (
    TABLES,
    StoreBase,
    StoredComparison,
    comparison_rows,
    model_from_row,
    now_iso,
    profile_from_row,
    profile_matrix_of,
)
from .online import COMPLETE_SQL, OnlineOutcomes, match_new_ids, outcome_query
from .postgres_replicas import ReplicaSharing
from .postgres_schema import MIGRATIONS, applied_migrations, apply_migrations
from .vectors import from_blob, to_blob

__all__ = ["PostgresStore", "is_postgres_url", "redact_url"]

_WHAT = "a postgresql:// database"


def is_postgres_url(database: object) -> bool:
    return isinstance(database, str) and database.startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or the query) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = urlencode(
        [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)], safe="/"
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _describe(url: str) -> str:
    """``database 'db' on host`` for error messages."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    host = info.get("host") or "the default socket"
    port = f":{info['port']}" if info.get("port") else ""
    return f"database {info.get('dbname') or info.get('user') or ''!r} on {host}{port}"


def _reason(error: Exception, url: str) -> str:
    """The server's or libpq's message, one line, without any password."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = text.removeprefix("connection failed: ") or type(error).__name__
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


class PostgresStore(ReplicaSharing, StoreBase):
    """A store in a PostgreSQL database.

    :param url: ``postgresql://[user[:password]@][host][:port]/dbname[?host=/socket/dir]``.
    :param pool_size: most connections this store opens.
    :param connect_timeout: seconds to wait for the server before giving up.
    """

    def __init__(self, url: str, *, pool_size: int = 8, connect_timeout: float = 10.0):
        psycopg = require("psycopg", "postgres", _WHAT)
        pool = require("psycopg_pool", "postgres", _WHAT)
        self.url = url
        self._errors = (psycopg.OperationalError, pool.PoolTimeout)
        try:
            where = _describe(url)
        except psycopg.ProgrammingError as e:
            raise InvalidInputError(f"not a valid database URL: {redact_url(url)}") from e
        try:  # one direct connection first: its error says why (the pool's would only time out)
            with psycopg.connect(url, connect_timeout=max(1, int(connect_timeout))) as conn:
                conn.autocommit = True
                self.applied = apply_migrations(conn)
        except psycopg.OperationalError as e:
            raise StoreUnavailableError(
                f"cannot connect to PostgreSQL {where}: {_reason(e, url)}"
            ) from e
        self._where = where
        self.pool = pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            timeout=connect_timeout,
            open=False,
        )
        self.pool.open(wait=True, timeout=connect_timeout)
        self._local = threading.local()

    @property
    def location(self) -> str:
        return redact_url(self.url)

    def close(self) -> None:
        self.pool.close()

    # -- connections -------------------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """The thread's pinned connection (inside a transaction), else one from the pool."""
        held = getattr(self._local, "conn", None)
        if held is not None:
            yield held
            return
        try:
            with self.pool.connection() as conn:
                yield conn
        except self._errors as e:
            raise self._unavailable(e) from e

    def _unavailable(self, error: Exception) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"PostgreSQL {self._where} is unavailable: {_reason(error, self.url)}"
        )

    @contextmanager
    def _pinned(self, snapshot: bool) -> Iterator[Any]:
        if getattr(self._local, "conn", None) is not None:  # nested: a savepoint
            with self._local.conn.transaction():
                yield self._local.conn
            return
        with self._connection() as conn, conn.transaction():
            if snapshot:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    def transaction(self) -> Any:
        """One write transaction (COMMIT, or ROLLBACK on error); yields the psycopg connection."""
        return self._pinned(snapshot=False)

    def read_snapshot(self) -> Any:
        """One repeatable-read transaction: store calls inside it see the same state."""
        return self._pinned(snapshot=True)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return list(conn.execute(sql, params).fetchall())

    def _dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with self._connection() as conn:
            return list(conn.cursor(row_factory=dict_row).execute(sql, params).fetchall())

    def _count(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self._rows(sql, params)[0][0] or 0)

    # -- users -------------------------------------------------------------------------------
    def upsert_user(
        self, user_id: str, *, attributes: dict[str, Any] | None = None, tenant: str = ""
    ) -> None:
        attrs = json.dumps(attributes or {})
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO users(id, tenant, attributes, created_at) VALUES (%s,%s,%s,%s) "
                "ON CONFLICT (id) DO UPDATE SET attributes = CASE WHEN %s = '{}' "
                "THEN users.attributes ELSE excluded.attributes END",
                (user_id, tenant, attrs, now_iso(), attrs),
            )

    def user(self, user_id: str) -> dict[str, Any]:
        rows = self._dicts("SELECT * FROM users WHERE id = %s", (user_id,))
        if not rows:
            raise UnknownUserError(f"unknown user {user_id!r}")
        row = rows[0]
        row["attributes"] = json.loads(row["attributes"])
        row["n_comparisons"] = self.count_comparisons(user_id)
        return row

    def has_user(self, user_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM users WHERE id = %s", (user_id,)))

    def user_ids(self, tenant: str | None = None) -> list[str]:
        if tenant is None:
            return [r[0] for r in self._rows("SELECT id FROM users ORDER BY id")]
        sql = "SELECT id FROM users WHERE tenant = %s ORDER BY id"
        return [r[0] for r in self._rows(sql, (tenant,))]

    def user_attributes(self) -> dict[str, dict[str, Any]]:
        return {u: json.loads(a) for u, a in self._rows("SELECT id, attributes FROM users")}

    def delete_user(self, user_id: str) -> dict[str, int]:
        """Remove the user and everything about them. Items shared with others stay: an item of
        the user's is an orphan when no comparison references it any more (index lookups)."""
        try:
            return self._delete_user(user_id)
        finally:
            self.feature_memo.clear()

    def _delete_user(self, user_id: str) -> dict[str, int]:
        with self.transaction() as conn:
            own = sorted(
                {
                    h
                    for row in conn.execute(
                        "SELECT prompt_hash, chosen_hash, rejected_hash FROM comparisons "
                        "WHERE user_id = %s",
                        (user_id,),
                    ).fetchall()
                    for h in row
                }
            )
            outcomes = conn.execute(
                "DELETE FROM online_eval WHERE comparison_id IN "
                "(SELECT id FROM comparisons WHERE user_id = %s)",
                (user_id,),
            ).rowcount
            counts = {
                "online_outcomes": outcomes,
                **{
                    name: conn.execute(f"DELETE FROM {table} WHERE {col} = %s", (user_id,)).rowcount
                    for name, table, col in (
                        ("comparisons", "comparisons", "user_id"),
                        ("profiles", "profiles", "user_id"),
                        ("users", "users", "id"),
                    )
                },
            }
            orphans = [
                r[0]
                for r in conn.execute(
                    "SELECT h FROM unnest(%s::text[]) AS h WHERE NOT EXISTS "
                    "(SELECT 1 FROM comparisons WHERE prompt_hash = h) AND NOT EXISTS "
                    "(SELECT 1 FROM comparisons WHERE chosen_hash = h) AND NOT EXISTS "
                    "(SELECT 1 FROM comparisons WHERE rejected_hash = h)",
                    (own,),
                ).fetchall()
            ]
            if orphans:
                conn.execute("DELETE FROM features WHERE hash = ANY(%s)", (orphans,))
                conn.execute("DELETE FROM features WHERE prompt_hash = ANY(%s)", (orphans,))
                conn.execute("DELETE FROM items WHERE hash = ANY(%s)", (orphans,))
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

        Idempotent, like SQLite's; ``outcomes`` are stored after, each only when this call stored
        its comparison (the insert returns the ids of the rows it stored). Users and items go in
        sorted, so concurrent batches lock shared rows in one order.
        """
        comps = list(comparisons)
        if not comps:
            return 0, 0
        now = now_iso()
        items, rows, users = comparison_rows(comps, now, outcomes.text_hashes if outcomes else None)
        item_cols = list(zip(*sorted(items.values())))
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO users(id, tenant, attributes, created_at) "
                "SELECT u, %s, '{}', %s FROM unnest(%s::text[]) AS u ORDER BY u "
                "ON CONFLICT (id) DO NOTHING",
                (tenant, now, sorted(users)),
            )
            conn.execute(
                "INSERT INTO items(hash, kind, text, uri, created_at) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) "
                "ON CONFLICT (hash) DO NOTHING",
                [list(c) for c in item_cols],
            )
            cur = conn.execute(
                "INSERT INTO comparisons(user_id, prompt_hash, chosen_hash, rejected_hash, "
                "strength, tie, source, meta, created_at) "
                "SELECT u, p, c, r, s, t, src, m, ts FROM unnest(%s::text[], %s::text[], "
                "%s::text[], %s::text[], %s::float8[], %s::int[], %s::text[], %s::text[], "
                "%s::text[]) WITH ORDINALITY AS b(u, p, c, r, s, t, src, m, ts, i) ORDER BY i "
                "ON CONFLICT (user_id, prompt_hash, chosen_hash, rejected_hash) DO NOTHING"
                + (
                    " RETURNING id, user_id, prompt_hash, chosen_hash, rejected_hash"
                    if outcomes
                    else ""
                ),
                [list(c) for c in zip(*rows)],
            )
            added = cur.rowcount
            if outcomes and added:
                stored = list(outcomes.rows(match_new_ids(rows, cur.fetchall())))
                if stored:
                    conn.execute(
                        "INSERT INTO online_eval(comparison_id, model_id, margin, state) "
                        "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::float8[], %s::text[]) "
                        "ON CONFLICT DO NOTHING",
                        [list(c) for c in zip(*stored)],
                    )
        return added, len(rows) - added

    _COMPARISON_SELECT = (
        "SELECT c.id, c.user_id, p.text AS prompt, COALESCE(a.text, a.uri) AS chosen, "
        "COALESCE(b.text, b.uri) AS rejected, c.prompt_hash, c.chosen_hash, c.rejected_hash, "
        "a.kind AS kind, c.strength, c.tie, c.source, c.created_at "
        "FROM comparisons c JOIN items p ON p.hash = c.prompt_hash "
        "JOIN items a ON a.hash = c.chosen_hash JOIN items b ON b.hash = c.rejected_hash"
    )

    def comparisons(
        self, user_id: str | None = None, *, users: Sequence[str] | None = None
    ) -> list[StoredComparison]:
        """Stored comparisons (of one user, of ``users``, or all), in the order they were stored."""
        where: list[str] = []
        params: list[Any] = []
        if user_id is not None:
            where.append("c.user_id = %s")
            params.append(user_id)
        if users is not None:
            where.append("c.user_id = ANY(%s)")
            params.append(list(dict.fromkeys(users)))
        sql = self._COMPARISON_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._rows(sql + " ORDER BY c.id", params)
        # columns in field order (see _COMPARISON_SELECT); tie is the 11th
        return [StoredComparison(*r[:10], bool(r[10]), *r[11:]) for r in rows]  # type: ignore[call-arg]

    def comparison_keys(
        self, users: Sequence[str]
    ) -> list[tuple[str, str, str, str, float, int, str]]:
        """(user_id, prompt_hash, chosen_hash, rejected_hash, strength, tie, kind) of the
        comparisons of ``users``, in the order they were stored."""
        return self._rows(  # type: ignore[return-value]
            "SELECT c.user_id, c.prompt_hash, c.chosen_hash, c.rejected_hash, c.strength, c.tie, "
            "a.kind FROM comparisons c JOIN items a ON a.hash = c.chosen_hash "
            "WHERE c.user_id = ANY(%s) ORDER BY c.id",
            (list(dict.fromkeys(users)),),
        )

    def complete_outcomes(self, limit: int = 100_000) -> int:
        """See :func:`persona_engine.store.online.complete_outcomes`."""
        with self.transaction() as conn:
            return int(conn.execute(COMPLETE_SQL.format(mark="%s"), (int(limit),)).rowcount)

    def online_outcomes(
        self,
        *,
        model_id: str | None = None,
        since: str | None = None,
        tenant: str | None = None,
        user_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored online-evaluation outcomes, oldest first (filters combine)."""
        sql, params = outcome_query(
            model_id=model_id, since=since, tenant=tenant, user_id=user_id, mark="%s"
        )
        return self._dicts(sql, params)

    def count_comparisons(self, user_id: str | None = None) -> int:
        if user_id is None:
            return self._count("SELECT count(*) FROM comparisons")
        return self._count("SELECT count(*) FROM comparisons WHERE user_id = %s", (user_id,))

    def comparison_counts(self) -> dict[str, int]:
        sql = "SELECT user_id, count(*) FROM comparisons GROUP BY user_id"
        return {u: int(n) for u, n in self._rows(sql)}

    def item_texts(self, hashes: Sequence[str]) -> dict[str, str]:
        sql = "SELECT hash, COALESCE(text, uri) FROM items WHERE hash = ANY(%s)"
        return dict(self._rows(sql, (list(hashes),)))  # type: ignore[arg-type]

    # -- feature cache -----------------------------------------------------------------------
    def get_pair_features(
        self, encoder: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], np.ndarray]:
        """Cached features by ``(prompt_hash, hash)`` (see the SQLite store), in one query."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        rows = self._rows(
            "SELECT f.prompt_hash, f.hash, f.dim, f.vector FROM features f "
            "JOIN unnest(%s::text[], %s::text[]) AS k(p, h) ON f.prompt_hash = k.p AND f.hash = k.h "
            "WHERE f.encoder = %s",
            ([p for p, _ in wanted], [h for _, h in wanted], encoder),
        )
        return {(p, h): from_blob(v, dim) for p, h, dim, v in rows}

    def put_pair_features(self, encoder: str, vectors: dict[tuple[str, str], np.ndarray]) -> None:
        if not vectors:
            return
        keys = sorted(vectors)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO features(encoder, prompt_hash, hash, dim, vector) "
                "SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::int[], %s::bytea[]) "
                "ON CONFLICT (encoder, prompt_hash, hash) "
                "DO UPDATE SET dim = excluded.dim, vector = excluded.vector",
                (
                    encoder,
                    [p for p, _ in keys],
                    [h for _, h in keys],
                    [int(vectors[k].shape[0]) for k in keys],
                    [to_blob(vectors[k]) for k in keys],
                ),
            )

    def count_features(self, encoder: str | None = None) -> int:
        if encoder is None:
            return self._count("SELECT count(*) FROM features")
        return self._count("SELECT count(*) FROM features WHERE encoder = %s", (encoder,))

    # -- model registry ----------------------------------------------------------------------
    def next_model_version(self, backend: str) -> int:
        return self._count("SELECT max(version) FROM models WHERE backend = %s", (backend,)) + 1

    def add_model(
        self, record: ModelRecord, *, activate: bool = True, files: Path | None = None
    ) -> ModelRecord:
        """Register a version, and store the files of ``files`` with it in the same transaction
        (see :mod:`.postgres_replicas`)."""
        with self.transaction() as conn:
            if activate:
                conn.execute("UPDATE models SET active = 0 WHERE backend = %s", (record.backend,))
            conn.execute(
                "INSERT INTO models(id, backend, version, path, encoder, config, data, metrics, "
                "trained_at, active) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
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
            if files is not None:
                self.put_model_files(record.id, files)
        return record.model_copy(update={"active": activate})

    def set_model_metrics(self, model_id: str, metrics: dict[str, Any]) -> None:
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE models SET metrics = %s WHERE id = %s", (json.dumps(metrics), model_id)
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"unknown model {model_id!r}")

    _MODEL_COLUMNS = (
        "id, backend, version, path, encoder, config, data, metrics, trained_at, active"
    )

    def models(self, backend: str | None = None) -> list[ModelRecord]:
        sql = f"SELECT {self._MODEL_COLUMNS} FROM models"
        if backend is None:
            rows = self._dicts(sql + " ORDER BY trained_at, version")
        else:
            rows = self._dicts(sql + " WHERE backend = %s ORDER BY version", (backend,))
        return [model_from_row(r) for r in rows]

    def model(self, model_id: str) -> ModelRecord:
        sql = f"SELECT {self._MODEL_COLUMNS} FROM models WHERE id = %s"
        rows = self._dicts(sql, (model_id,))
        if not rows:
            raise NotFoundError(f"unknown model {model_id!r}")
        return model_from_row(rows[0])

    def active_model(self, backend: str | None = None) -> ModelRecord | None:
        """The active model of ``backend``; without one, the most recently trained active model."""
        sql = f"SELECT {self._MODEL_COLUMNS} FROM models WHERE active = 1"
        if backend is None:
            rows = self._dicts(sql + " ORDER BY trained_at DESC, seq DESC LIMIT 1")
        else:
            rows = self._dicts(sql + " AND backend = %s LIMIT 1", (backend,))
        return model_from_row(rows[0]) if rows else None

    def activate_model(self, model_id: str) -> None:
        with self.transaction() as conn:
            found = conn.execute("SELECT backend FROM models WHERE id = %s", (model_id,)).fetchone()
            if found is None:
                raise NotFoundError(f"unknown model {model_id!r}")
            conn.execute("UPDATE models SET active = 0 WHERE backend = %s", (found[0],))
            conn.execute("UPDATE models SET active = 1 WHERE id = %s", (model_id,))

    # -- profiles ----------------------------------------------------------------------------
    def put_profiles(self, profiles: Iterable[UserProfile]) -> int:
        latest: dict[tuple[str, str], UserProfile] = {}
        n = 0
        for p in profiles:  # one statement cannot update a row twice: the last one wins
            latest[(p.user_id, p.model_id)] = p
            n += 1
        if not latest:
            return 0
        ps = [latest[k] for k in sorted(latest)]
        cols = [
            [p.user_id for p in ps],
            [p.model_id for p in ps],
            [p.backend for p in ps],
            [len(p.vector) for p in ps],
            [to_blob(p.vector) for p in ps],
            [None if p.uncertainty is None else to_blob(p.uncertainty) for p in ps],
            [None if p.weights is None else json.dumps(p.weights) for p in ps],
            [p.n_comparisons for p in ps],
            [p.source for p in ps],
            [p.created_at.isoformat() for p in ps],
            [p.updated_at.isoformat() for p in ps],
        ]
        now = now_iso()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO users(id, tenant, attributes, created_at) "
                "SELECT DISTINCT u, '', '{}', %s FROM unnest(%s::text[]) AS u ORDER BY u "
                "ON CONFLICT (id) DO NOTHING",
                (now, cols[0]),
            )
            conn.execute(
                "INSERT INTO profiles(user_id, model_id, backend, dim, vector, uncertainty, "
                "weights, n_comparisons, source, created_at, updated_at) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], "
                "%s::bytea[], %s::bytea[], %s::text[], %s::int[], %s::text[], %s::text[], "
                "%s::text[]) ON CONFLICT (user_id, model_id) DO UPDATE SET "
                "vector = excluded.vector, dim = excluded.dim, uncertainty = excluded.uncertainty, "
                "weights = excluded.weights, n_comparisons = excluded.n_comparisons, "
                "source = excluded.source, updated_at = excluded.updated_at",
                cols,
            )
        return n

    _PROFILE_COLUMNS = (
        "user_id, model_id, backend, dim, vector, uncertainty, weights, n_comparisons, source, "
        "created_at, updated_at"
    )

    def profile(self, user_id: str, model_id: str) -> UserProfile | None:
        sql = f"SELECT {self._PROFILE_COLUMNS} FROM profiles WHERE user_id = %s AND model_id = %s"
        rows = self._dicts(sql, (user_id, model_id))
        return profile_from_row(rows[0]) if rows else None

    def profiles(self, model_id: str) -> list[UserProfile]:
        sql = f"SELECT {self._PROFILE_COLUMNS} FROM profiles WHERE model_id = %s ORDER BY user_id"
        return [profile_from_row(r) for r in self._dicts(sql, (model_id,))]

    def profile_model_ids(self, user_id: str) -> list[str]:
        sql = "SELECT model_id FROM profiles WHERE user_id = %s ORDER BY model_id"
        return [r[0] for r in self._rows(sql, (user_id,))]

    def profile_users(self, model_id: str, *, without: str | None = None) -> list[str]:
        sql, params = "SELECT user_id FROM profiles p WHERE model_id = %s", [model_id]
        if without is not None:
            sql += (
                " AND NOT EXISTS (SELECT 1 FROM profiles q "
                "WHERE q.user_id = p.user_id AND q.model_id = %s)"
            )
            params.append(without)
        return [r[0] for r in self._rows(sql + " ORDER BY user_id", params)]

    def profile_vectors(
        self, model_id: str, users: Sequence[str]
    ) -> dict[str, tuple[np.ndarray, str]]:
        rows = self._rows(
            "SELECT user_id, dim, vector, source FROM profiles "
            "WHERE model_id = %s AND user_id = ANY(%s)",
            (model_id, list(dict.fromkeys(users))),
        )
        return {u: (from_blob(v, dim), source) for u, dim, v, source in rows}

    def profile_rows(
        self, model_id: str, rowids: Sequence[int] | None = None
    ) -> tuple[np.ndarray, list[str], np.ndarray]:
        sql = "SELECT row_id, user_id, dim, vector FROM profiles WHERE model_id = %s"
        if rowids is None:
            raw = self._rows(sql + " ORDER BY user_id", (model_id,))
        else:
            wanted = [int(r) for r in rowids]
            raw = self._rows(sql + " AND row_id = ANY(%s::bigint[])", (model_id, wanted))
        return profile_matrix_of(model_id, raw)  # type: ignore[arg-type]

    def count_profiles(self, model_id: str | None = None) -> int:
        if model_id is None:
            return self._count("SELECT count(*) FROM profiles")
        return self._count("SELECT count(*) FROM profiles WHERE model_id = %s", (model_id,))

    def delete_profile(self, user_id: str, model_id: str | None = None) -> int:
        with self.transaction() as conn:
            if model_id is None:
                cur = conn.execute("DELETE FROM profiles WHERE user_id = %s", (user_id,))
            else:
                cur = conn.execute(
                    "DELETE FROM profiles WHERE user_id = %s AND model_id = %s",
                    (user_id, model_id),
                )
            return int(cur.rowcount)

    # -- the profile change log (created by the schema: see postgres_schema) -----------------
    def install_change_log(self) -> None:
        """Nothing to do: the log and its triggers are part of the PostgreSQL schema."""

    def change_log_head(self) -> int:
        return self._count("SELECT max(seq) FROM profile_changes")

    def change_log_pruned_through(self) -> int:
        return self._count("SELECT through FROM profile_changes_pruned WHERE id = 1")

    def changed_profile_rows(self, model_id: str, after: int, through: int) -> list[int]:
        rows = self._rows(
            "SELECT DISTINCT row_id FROM profile_changes "
            "WHERE seq > %s AND seq <= %s AND model_id = %s",
            (after, through, model_id),
        )
        return [int(r[0]) for r in rows]

    def prune_change_log_through(self, seq: int) -> int:
        with self.transaction() as conn:
            n = conn.execute("DELETE FROM profile_changes WHERE seq <= %s", (seq,)).rowcount
            conn.execute(
                "UPDATE profile_changes_pruned SET through = greatest(through, %s) WHERE id = 1",
                (seq,),
            )
        return int(n)

    # -- status ------------------------------------------------------------------------------
    def migrations_applied(self) -> list[str]:
        with self._connection() as conn:
            return [name for (name,) in applied_migrations(conn)]

    def status(self) -> dict[str, Any]:
        counts = {t: self._count(f"SELECT count(*) FROM {t}") for t in TABLES}
        return {"path": self.location, "counts": counts, "migrations": self.migrations_applied()}

    def integrity_check(self) -> str:
        """``"ok"``, or the problems found: missing migrations, constraints not validated, a
        change log pruned past its head. (Row-level consistency is the server's own job.)"""
        problems = []
        missing = [n for n, _ in MIGRATIONS if n not in self.migrations_applied()]
        if missing:
            problems.append(f"migrations not applied: {', '.join(missing)}")
        invalid = self._rows(
            "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = current_schema() AND NOT c.convalidated"
        )
        if invalid:
            problems.append(f"constraints not validated: {', '.join(r[0] for r in invalid)}")
        if self.change_log_pruned_through() > self.change_log_head() > 0:
            problems.append("the profile change log is pruned past its head")
        return "; ".join(problems) or "ok"
