"""Reads of the service that must never wait for the writer: key checks, tenant checks, metrics,
the dashboard's reports.

They go through the store's :meth:`~persona_engine.store.StoreBase.read` (SQLite: a read-only
connection per thread, WAL; PostgreSQL: the pool's connections, MVCC), so they stay fast while
the single writer holds a long transaction.
"""

from __future__ import annotations

from typing import Any

from ..store import StoreBase


class StoreReader:
    def __init__(self, store: StoreBase):
        self.store = store

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only statement, SQL portable between the stores (``?`` parameters)."""
        return self.store.read(sql, params)
