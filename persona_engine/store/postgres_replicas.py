"""What the replicas of a service share through PostgreSQL, beside the data: API keys, model files,
named locks, and notifications of profile changes.

A mixin of :class:`~.postgres.PostgresStore` (its pool, its pinned transactions and its URL):

- **API keys** live in ``api_keys`` (migration ``m004``), so a key made through any replica (or
  ``persona keys create`` anywhere) works on all of them.
- **Model files** (``m005``): a registered version's directory is stored in ``model_files``, one
  row per file and chunk of at most :data:`CHUNK_BYTES`, each with its file's SHA-256, in the
  same transaction as the version's row. A process that lacks the directory writes it from there.
- **Locks**: :meth:`try_lock` is a session-level advisory lock on a connection of its own, held
  until released or until the process (hence its connection) dies.
- **Notifications** (``m006``): the change log's trigger calls ``pg_notify`` on
  :data:`~.postgres_schema.PROFILE_CHANGES_CHANNEL`; :meth:`watch_profile_changes` listens on a
  connection of its own, on a thread of its own, and reconnects when the server goes away.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NotFoundError, StoreUnavailableError
from .postgres_schema import PROFILE_CHANGES_CHANNEL

log = logging.getLogger("persona_engine.store")

#: largest piece of a model file in one ``bytea`` value
CHUNK_BYTES = 8 << 20


def lock_key(name: str) -> int:
    """The advisory lock key (a signed 64-bit integer) of a lock name."""
    return int.from_bytes(
        hashlib.sha256(f"persona_engine:{name}".encode()).digest()[:8], "big", signed=True
    )


def files_digest(files: Sequence[tuple[str, str]]) -> str:
    """One digest of a model directory from its (relative name, SHA-256) pairs."""
    lines = "".join(f"{name}\0{sha}\n" for name, sha in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


class ReplicaSharing:
    """The shared-state methods of :class:`~.postgres.PostgresStore` (see the module docstring)."""

    url: str
    keeps_model_files = True

    if TYPE_CHECKING:  # provided by PostgresStore

        def transaction(self) -> Any: ...
        def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
        def _unavailable(self, error: Exception) -> StoreUnavailableError: ...

    @property
    def database(self) -> str:
        return self.url

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """On a pool connection (MVCC: never waits for a writer); ``?`` becomes ``%s``."""
        return self._rows(sql.replace("%", "%%").replace("?", "%s"), params)

    # -- API keys ----------------------------------------------------------------------------
    def add_api_key(
        self, key_id: str, digest: str, *, tenant: str = "", name: str = "", created_at: str
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO api_keys(id, hash, tenant, name, created_at) VALUES (%s,%s,%s,%s,%s)",
                (key_id, digest, tenant, name, created_at),
            )

    def revoke_api_key(self, key_id: str, at: str) -> int:
        with self.transaction() as conn:
            return int(
                conn.execute(
                    "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                    (at, key_id),
                ).rowcount
            )

    # -- model files -------------------------------------------------------------------------
    def put_model_files(self, model_id: str, directory: Path) -> None:
        """Replace ``model_id``'s stored files with those under ``directory`` (one transaction)."""
        directory = Path(directory)
        files = sorted(p for p in directory.rglob("*") if p.is_file())
        if not files:
            raise NotFoundError(f"no model files under {directory}")
        with self.transaction() as conn:
            conn.execute("DELETE FROM model_files WHERE model_id = %s", (model_id,))
            with conn.cursor() as cur:
                for path in files:
                    data = path.read_bytes()
                    sha = hashlib.sha256(data).hexdigest()
                    name = path.relative_to(directory).as_posix()
                    cur.executemany(
                        "INSERT INTO model_files(model_id, name, chunk, sha256, data) "
                        "VALUES (%s,%s,%s,%s,%s)",
                        [
                            (model_id, name, i, sha, data[start : start + CHUNK_BYTES])
                            for i, start in enumerate(range(0, max(len(data), 1), CHUNK_BYTES))
                        ],
                    )

    def model_files_digest(self, model_id: str) -> str | None:
        rows = self._rows(
            "SELECT name, sha256 FROM model_files WHERE model_id = %s AND chunk = 0", (model_id,)
        )
        return files_digest([(str(n), str(s)) for n, s in rows]) if rows else None

    def write_model_files(self, model_id: str, directory: Path) -> None:
        """Write the stored files into ``directory`` (built beside it, then renamed into place;
        when another process got there first, its copy stays)."""
        directory = Path(directory)
        rows = self._rows(
            "SELECT name, sha256, data FROM model_files WHERE model_id = %s ORDER BY name, chunk",
            (model_id,),
        )
        if not rows:
            raise NotFoundError(f"the store holds no files of model {model_id}")
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            pieces: dict[str, tuple[str, list[bytes]]] = {}
            for name, sha, data in rows:
                pieces.setdefault(str(name), (str(sha), []))[1].append(bytes(data))
            for name, (sha, chunks) in pieces.items():
                data = b"".join(chunks)
                if hashlib.sha256(data).hexdigest() != sha:
                    raise StoreUnavailableError(f"model {model_id}'s stored {name} is damaged")
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            try:
                os.replace(tmp, directory)
            except OSError:  # written meanwhile by another thread or process: keep theirs
                if not directory.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- locks and notifications -------------------------------------------------------------
    def _own_connection(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as e:
            raise self._unavailable(e) from e

    def try_lock(self, name: str) -> Callable[[], None] | None:
        """A session-level advisory lock on a connection of its own (closing it releases it)."""
        import psycopg

        key = lock_key(name)
        conn = self._own_connection()
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            conn.close()
            return None

        def release() -> None:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except psycopg.Error:  # the connection broke: the server released the lock
                pass
            finally:
                conn.close()

        return release

    def watch_profile_changes(self, callback: Callable[[], object]) -> Callable[[], None] | None:
        """LISTEN on a connection of its own; ``callback`` runs once on (re)connecting (changes
        made while nobody listened) and after each notification."""
        import psycopg

        stop = threading.Event()

        def call() -> None:
            try:
                callback()
            except Exception:  # the next notification, or the next query, tries again
                log.exception("profile change callback failed")

        def listen() -> None:
            while not stop.is_set():
                try:
                    with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                        conn.execute(f"LISTEN {PROFILE_CHANGES_CHANNEL}")
                        call()
                        while not stop.is_set():
                            for _ in conn.notifies(timeout=0.5, stop_after=1):
                                call()
                except psycopg.Error as e:
                    log.warning("listening for profile changes failed (retrying): %s", e)
                    stop.wait(1.0)

        thread = threading.Thread(target=listen, name="persona-profile-changes", daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(5.0)

        return halt
