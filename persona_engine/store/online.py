"""SQL of online (prequential) evaluation: the outcomes table written beside new comparisons."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OnlineOutcome:
    """How the active model scored one comparison before it was stored."""

    model_id: str
    user_id: str
    prompt_hash: str
    chosen_hash: str
    rejected_hash: str
    margin: float  # r(chosen) - r(rejected) for the user's state at that moment
    new_items: bool  # neither response was in any of the user's earlier comparisons
    n_before: int  # comparisons the user had given before this one
    state: str  # "profile" or "prior" (the cold-start rule)

    @property
    def correct(self) -> bool:
        return self.margin > 0


def insert_outcomes(conn: sqlite3.Connection, outcomes: Sequence[OnlineOutcome], now: str) -> None:
    """Insert inside the caller's transaction, before its comparisons: an outcome whose
    comparison is already stored is skipped (it was seen, and maybe trained on, before)."""
    conn.executemany(
        "INSERT OR IGNORE INTO online_eval(model_id, user_id, prompt_hash, chosen_hash, rejected_hash, "
        "margin, correct, new_items, n_before, state, created_at) "
        "SELECT ?,?,?,?,?,?,?,?,?,?,? WHERE NOT EXISTS (SELECT 1 FROM comparisons "
        "WHERE user_id=? AND prompt_hash=? AND chosen_hash=? AND rejected_hash=?)",
        [
            (
                o.model_id,
                o.user_id,
                o.prompt_hash,
                o.chosen_hash,
                o.rejected_hash,
                float(o.margin),
                int(o.correct),
                int(o.new_items),
                o.n_before,
                o.state,
                now,
                o.user_id,
                o.prompt_hash,
                o.chosen_hash,
                o.rejected_hash,
            )
            for o in outcomes
        ],
    )


def batch_history(
    conn: sqlite3.Connection, rows: Sequence[tuple[str, str, str, str]]
) -> list[tuple[int, bool, bool]]:
    """For each (user, prompt hash, chosen hash, rejected hash): (how many comparisons the user
    has stored, whether either response is in one of them, whether this comparison is stored).

    One statement over the batch as a JSON array; the per-row lookups run inside SQLite on the
    comparisons' (user_id, prompt_hash, chosen_hash, rejected_hash) unique index.
    """
    if not rows:
        return []
    found = conn.execute(
        """
        WITH b AS MATERIALIZED (
            SELECT CAST(key AS INTEGER) AS i, value ->> 0 AS u, value ->> 1 AS p,
                   value ->> 2 AS x, value ->> 3 AS y
            FROM json_each(?)
        )
        SELECT b.i,
            (SELECT count(*) FROM comparisons c WHERE c.user_id = b.u),
            EXISTS (SELECT 1 FROM comparisons c WHERE c.user_id = b.u
                    AND (c.chosen_hash IN (b.x, b.y) OR c.rejected_hash IN (b.x, b.y))),
            EXISTS (SELECT 1 FROM comparisons c WHERE c.user_id = b.u AND c.prompt_hash = b.p
                    AND c.chosen_hash = b.x AND c.rejected_hash = b.y)
        FROM b ORDER BY b.i
        """,
        (json.dumps(rows),),
    ).fetchall()
    return [(int(n), bool(seen), bool(stored)) for _, n, seen, stored in found]


def outcome_rows(
    conn: sqlite3.Connection,
    *,
    model_id: str | None = None,
    since: str | None = None,
    tenant: str | None = None,
    user_id: str | None = None,
) -> list[dict[str, Any]]:
    sql, params = outcome_query(model_id=model_id, since=since, tenant=tenant, user_id=user_id)
    cur = conn.execute(sql, params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def outcome_query(
    *,
    model_id: str | None = None,
    since: str | None = None,
    tenant: str | None = None,
    user_id: str | None = None,
    mark: str = "?",
) -> tuple[str, list[Any]]:
    """The SQL (with ``mark`` placeholders) and parameters of :func:`outcome_rows`."""
    sql = (
        "SELECT o.model_id, o.user_id, o.margin, o.correct, o.new_items, o.n_before, o.state, "
        "o.created_at FROM online_eval o"
    )
    where: list[str] = []
    params: list[Any] = []
    if tenant is not None:
        sql += " JOIN users u ON u.id = o.user_id"
        where.append(f"u.tenant = {mark}")
        params.append(tenant)
    for col, value in (("o.model_id", model_id), ("o.user_id", user_id)):
        if value is not None:
            where.append(f"{col} = {mark}")
            params.append(value)
    if since is not None:
        where.append(f"o.created_at >= {mark}")
        params.append(since)
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " ORDER BY o.id", params
