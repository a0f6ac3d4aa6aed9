"""A throwaway PostgreSQL server for tests: initdb in a temporary directory, listening on a unix
socket only, stopped and deleted afterwards.

The server binaries come from ``pg_config --bindir``, else ``/usr/lib/postgresql/*/bin``, else the
``pgserver`` pip package. initdb refuses to run as root, so under root (containers, CI) the server
runs as the ``postgres`` system user, which owns the temporary directory. Without any of these a
:class:`PostgresUnavailable` error says what to install: the PostgreSQL tests fail, never skip.

    with throwaway_postgres() as server:
        url = server.create_database("t1")   # postgresql://postgres@/t1?host=/tmp/pe-pg-...
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: server settings for tests: no TCP
_SETTINGS = {"listen_addresses": "''", "max_connections": "300"}
#: and no durability, unless a test stops the server and counts what survived
_FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be started for the tests."""


def find_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, or None."""
    candidates = []
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.CalledProcessError):
            pass
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


class PostgresServer:
    """A running test server: ``url(db)``, ``create_database(name)``, ``drop_database(name)``."""

    def __init__(
        self,
        url: Callable[[str], str],
        stop: Callable[[], None],
        start: Callable[[], None] | None = None,
    ):
        self._url = url
        self._stop = stop
        self._start = start

    def url(self, dbname: str = "postgres") -> str:
        return self._url(dbname)

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, name: str) -> str:
        self.admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        self._stop()

    def start(self) -> None:
        """Start the server again after :meth:`stop` (same data: what was committed is there)."""
        if self._start is None:
            raise PostgresUnavailable("this server cannot be restarted")
        self._start()


def _run(cmd: list[str], what: str, log: Path | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
        raise PostgresUnavailable(
            f"{what} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}\n{tail}"
        )


@contextmanager
def _system_server(bindir: Path, durable: bool) -> Iterator[PostgresServer]:
    root = os.geteuid() == 0
    prefix: list[str] = []
    directory = tempfile.mkdtemp(prefix="pe-pg-")  # short: a socket path has ~100 bytes
    if root:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError as e:
            raise PostgresUnavailable(
                "running as root, and initdb refuses root: create a 'postgres' system user "
                "(useradd -r postgres) to run the test server as"
            ) from e
        os.chown(directory, account.pw_uid, account.pw_gid)
        runuser = shutil.which("runuser") or shutil.which("setpriv")
        if runuser is None:
            raise PostgresUnavailable("running as root, and neither runuser nor setpriv exists")
        if runuser.endswith("runuser"):
            prefix = [runuser, "-u", "postgres", "--"]
        else:
            prefix = [runuser, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}"]
            prefix += ["--init-groups", "--"]
    data, log = Path(directory) / "data", Path(directory) / "server.log"
    settings = _SETTINGS if durable else {**_SETTINGS, **_FAST}
    options = f"-k {directory} " + " ".join(f"-c {k}={v}" for k, v in settings.items())
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        _run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
            + ["-E", "UTF8", "--locale=C", "--no-sync"],
            "initdb",
        )

        def start() -> None:
            _run(
                [*pg_ctl, "-o", options, "-l", str(log), "-w", "-t", "60", "start"],
                "pg_ctl start",
                log,
            )

        def stop() -> None:
            subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True)

        start()
        server = PostgresServer(
            lambda db: f"postgresql://postgres@/{db}?host={directory}", stop, start
        )
        try:
            yield server
        finally:
            stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _pgserver() -> Iterator[PostgresServer]:
    import pgserver  # type: ignore[import-not-found]

    directory = tempfile.mkdtemp(prefix="pe-pg-")
    try:
        pg = pgserver.get_server(directory, cleanup_mode="stop")
        try:
            yield PostgresServer(lambda db: str(pg.get_uri(db)), pg.cleanup)
        finally:
            pg.cleanup()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def throwaway_postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    """Start a test server (see the module's docstring); stop and delete it on exit. Without
    ``durable``, commits are not flushed (fast): a stopped server loses its last ones."""
    bindir = find_bindir()
    if bindir is not None:
        with _system_server(bindir, durable) as server:
            yield server
        return
    try:
        import pgserver  # type: ignore[import-not-found]  # noqa: F401
    except ImportError as e:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries (initdb, pg_ctl): install them "
            "(apt-get install postgresql) or pip install pgserver"
        ) from e
    with _pgserver() as server:
        yield server
