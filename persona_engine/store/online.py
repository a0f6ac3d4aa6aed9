"""SQL of online (prequential) evaluation: the outcomes table written beside new comparisons.

An outcome row is keyed by the comparison it scored (``online_eval.comparison_id``) and holds what
only the moment of arrival knows: the model version, the margin r(chosen) - r(rejected) for the
user's state then, and what scored it (``profile`` or ``prior``). What the comparisons table
itself records is not copied on the write path: the user, the time, how many comparisons the user
had given before (``n_before``) and whether both responses were new to them (``new_items``) follow
from the comparisons stored before it (by id). The last two are computed when outcomes are read
(:data:`N_BEFORE` and :data:`NEW_ITEMS`) and kept by :func:`complete_outcomes`, so a write costs
one small row and reading many outcomes costs the history lookups once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: (user_id, prompt_hash, chosen_hash, rejected_hash): a comparison's identity in the store
ComparisonKey = tuple[str, str, str, str]


@dataclass
class OnlineOutcomes:
    """How the active model scored a batch of comparisons before they were stored: one entry
    per comparison of the batch, in its order (``margins`` NaN and ``states`` None where a
    comparison was not scored: images, ties)."""

    model_id: str
    margins: np.ndarray = field(default_factory=lambda: np.zeros(0))  # r(chosen) - r(rejected)
    states: list[str | None] = field(default_factory=list)  # "profile" or "prior" (cold start)
    #: text -> content hash of the batch's texts, so the store does not hash them again
    text_hashes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def none(cls, n: int) -> OnlineOutcomes:
        """A batch of ``n`` comparisons that was not scored (evaluation off, no model)."""
        return cls("", np.full(n, np.nan), [None] * n)

    @property
    def n_scored(self) -> int:
        return len(self.states) - self.states.count(None)

    def __bool__(self) -> bool:
        return self.n_scored > 0

    def rows(self, ids: Sequence[int | None]) -> Iterator[tuple[int, str, float, str]]:
        """(comparison id, model id, margin, state) of the scored comparisons that ``ids`` (by
        position in the batch) says this transaction stored: a comparison stored before, or
        the second copy of one sent twice in the batch, keeps no new outcome."""
        if len(ids) != len(self.states):
            raise ValueError(f"{len(self.states)} outcomes for a batch of {len(ids)} comparisons")
        model = self.model_id
        for cid, margin, state in zip(ids, self.margins.tolist(), self.states):
            if cid is not None and state is not None:
                yield cid, model, margin, state


def match_new_ids(
    keys: Sequence[Sequence[Any]], new: Iterable[tuple[Any, ...]]
) -> list[int | None]:
    """For each batch row (its first four columns are its key), the id of the row this
    transaction stored for it, given ``(id, user, prompt, chosen, rejected)`` of the new rows;
    a key sent twice gets its id at its first row."""
    found = {(u, p, x, y): cid for cid, u, p, x, y in new}
    return [found.pop((r[0], r[1], r[2], r[3]), None) for r in keys]


# -- the history facts, from the comparisons stored before (c: the scored comparison) ----------
N_BEFORE = "(SELECT count(*) FROM comparisons d WHERE d.user_id = c.user_id AND d.id < c.id)"
NEW_ITEMS = (
    "CAST(NOT EXISTS (SELECT 1 FROM comparisons d WHERE d.user_id = c.user_id AND d.id < c.id "
    "AND (d.chosen_hash IN (c.chosen_hash, c.rejected_hash) "
    "OR d.rejected_hash IN (c.chosen_hash, c.rejected_hash))) AS INTEGER)"
)
#: the columns a report reads, in SQL both SQLite and PostgreSQL run (``o``: online_eval)
OUTCOME_COLUMNS = (
    "o.model_id, c.user_id, o.margin, CAST(o.margin > 0 AS INTEGER) AS correct, "
    f"COALESCE(o.new_items, {NEW_ITEMS}) AS new_items, "
    f"COALESCE(o.n_before, {N_BEFORE}) AS n_before, o.state, c.created_at"
)
OUTCOMES_FROM = "online_eval o JOIN comparisons c ON c.id = o.comparison_id"
#: keeps the history facts of up to ``limit`` outcomes that do not have them yet
COMPLETE_SQL = (
    f"UPDATE online_eval SET n_before = x.n, new_items = x.fresh FROM ("
    f"SELECT c.id, {N_BEFORE} AS n, {NEW_ITEMS} AS fresh FROM online_eval o "
    "JOIN comparisons c ON c.id = o.comparison_id WHERE o.n_before IS NULL "
    "ORDER BY o.comparison_id LIMIT {mark}) AS x WHERE online_eval.comparison_id = x.id"
)


def new_comparison_ids(
    conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], before: int, added: int
) -> list[int | None]:
    """For each of ``rows`` (in insertion order), the id this transaction stored it under, or
    None (already stored, or a second copy), given the largest id before the insert and how many
    went in.

    SQLite gives each inserted row the largest id so far plus one, so when every row went in and
    the ids span exactly ``added`` values they are ``before + 1 ...`` in order (checked with one
    index read); otherwise the new rows are read back."""
    if not added:
        return [None] * len(rows)
    top = conn.execute("SELECT max(id) FROM comparisons").fetchone()[0]
    if added == len(rows) and top == before + added:
        return list(range(before + 1, before + 1 + added))
    return match_new_ids(
        rows,
        conn.execute(
            "SELECT id, user_id, prompt_hash, chosen_hash, rejected_hash FROM comparisons "
            "WHERE id > ?",
            (before,),
        ),
    )


def insert_outcomes(conn: sqlite3.Connection, rows: Iterable[tuple[int, str, float, str]]) -> None:
    """Inside the caller's transaction, after its comparisons (see :meth:`OnlineOutcomes.rows`)."""
    conn.executemany(
        "INSERT OR IGNORE INTO online_eval(comparison_id, model_id, margin, state) VALUES (?,?,?,?)",
        rows,
    )


def complete_outcomes(conn: sqlite3.Connection, limit: int) -> int:
    """Store the history facts of up to ``limit`` outcomes; returns how many."""
    return conn.execute(COMPLETE_SQL.format(mark="?"), (int(limit),)).rowcount


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
    sql = f"SELECT {OUTCOME_COLUMNS} FROM {OUTCOMES_FROM}"
    where: list[str] = []
    params: list[Any] = []
    if tenant is not None:
        sql += " JOIN users u ON u.id = c.user_id"
        where.append(f"u.tenant = {mark}")
        params.append(tenant)
    for col, value in (("o.model_id", model_id), ("c.user_id", user_id)):
        if value is not None:
            where.append(f"{col} = {mark}")
            params.append(value)
    if since is not None:
        where.append(f"c.created_at >= {mark}")
        params.append(since)
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " ORDER BY o.comparison_id", params
