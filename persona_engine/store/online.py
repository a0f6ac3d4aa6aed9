"""SQL of online (prequential) evaluation: the outcomes table written beside new comparisons."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
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


@dataclass
class UserHistory:
    """What a user had given before a batch: how many comparisons, which responses, which keys."""

    n: int = 0
    items: set[str] = field(default_factory=set)
    keys: set[tuple[str, str, str]] = field(default_factory=set)

    def add(self, prompt_hash: str, chosen_hash: str, rejected_hash: str) -> None:
        self.n += 1
        self.items.update((chosen_hash, rejected_hash))
        self.keys.add((prompt_hash, chosen_hash, rejected_hash))


def user_histories(conn: sqlite3.Connection, users: Sequence[str]) -> dict[str, UserHistory]:
    out: dict[str, UserHistory] = {u: UserHistory() for u in users}
    wanted = list(dict.fromkeys(users))
    for i in range(0, len(wanted), 900):
        chunk = wanted[i : i + 900]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT user_id, prompt_hash, chosen_hash, rejected_hash FROM comparisons "
            f"WHERE user_id IN ({marks})",
            chunk,
        ).fetchall()
        for u, p, c, r in rows:
            out[u].add(p, c, r)
    return out


def outcome_rows(
    conn: sqlite3.Connection,
    *,
    model_id: str | None = None,
    since: str | None = None,
    tenant: str | None = None,
    user_id: str | None = None,
) -> list[dict[str, Any]]:
    sql = (
        "SELECT o.model_id, o.user_id, o.margin, o.correct, o.new_items, o.n_before, o.state, "
        "o.created_at FROM online_eval o"
    )
    where: list[str] = []
    params: list[Any] = []
    if tenant is not None:
        sql += " JOIN users u ON u.id = o.user_id"
        where.append("u.tenant = ?")
        params.append(tenant)
    for col, value in (("o.model_id", model_id), ("o.user_id", user_id)):
        if value is not None:
            where.append(f"{col} = ?")
            params.append(value)
    if since is not None:
        where.append("o.created_at >= ?")
        params.append(since)
    if where:
        sql += " WHERE " + " AND ".join(where)
    cur = conn.execute(sql + " ORDER BY o.id", params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]
