"""Read connections of the SQLite store: one read-only connection per thread on the store's file.

In WAL mode a reader never waits for the writer, so reads that must stay fast while a long write
transaction runs (the service's key and tenant checks, its metrics) use these instead of the
store's own connection, which the writer holds.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any


class ReadConnections:
    """Per-thread ``query_only`` connections on the SQLite file ``path``, all closed by :meth:`close`."""

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, check_same_thread=False, timeout=30.0, isolation_level=None
            )
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._guard:
                self._opened.append(conn)
        return conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.connection().execute(sql, params).fetchall()

    def close(self) -> None:
        with self._guard:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
