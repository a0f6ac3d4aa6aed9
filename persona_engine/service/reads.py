"""Read connections for the service layer: one per thread, on the store's database file.

In WAL mode readers never wait for the writer, so key checks and tenant checks stay fast while a
long write transaction runs. An in-memory store has one connection; then reads share it.

The service runs on the SQLite store for now (:func:`sqlite_store`); its SQL moves behind store
methods when it learns PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from ..errors import PersonaEngineError
from ..store import Store, StoreBase


def sqlite_store(store: StoreBase) -> Store:
    """``store``, which the service needs to be the SQLite one (for now)."""
    if not isinstance(store, Store):
        raise PersonaEngineError(
            f"persona serve runs on the SQLite store for now, not on {store.location}"
        )
    return store


class StoreReader:
    def __init__(self, store: StoreBase):
        self.store = store = sqlite_store(store)
        self._file = None if store.path == ":memory:" else store.path
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._file or ":memory:",
                check_same_thread=False,
                timeout=30.0,
                isolation_level=None,
            )
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        if self._file is None:
            with self.store.transaction() as conn:
                return conn.execute(sql, params).fetchall()
        return self._connection().execute(sql, params).fetchall()
