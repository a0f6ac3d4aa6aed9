"""``persona bench serve``: the HTTP service under load and under a kill -9, on loopback only.

Load run: a real server process (``python -m persona_engine.service``) on 127.0.0.1, concurrent
writers (``POST /v1/comparisons``, every write unique) and readers (``POST /v1/score``), each a
fixed number of requests. Reported: requests/s and p50/p99 latency per kind, and the count of
acknowledged writes against the count found in the store afterwards.

Fault run: writers again; after half the planned writes the server gets SIGKILL. The server is
restarted on the same store, and every write acknowledged before the kill must be there, and
``PRAGMA integrity_check`` must say ``ok``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HOST = "127.0.0.1"  # loopback only, by design


@dataclass
class ServeBenchConfig:
    writers: int = 8
    readers: int = 8
    writes: int = 2000
    reads: int = 2000
    candidates: int = 8
    encoder: str = "hashing"
    fault_writes: int = 1000
    seed: int = 0
    #: the load generator: "lean" (:mod:`.http_client`, little CPU per request) or "httpx"
    client: str = "lean"
    #: CPUs for each server process (``persona serve --cpus``) and for the load generator
    server_cpus: str | None = None
    client_cpus: str | None = None


@dataclass
class KindStats:
    requests: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    #: the server's own time per answered request (its Server-Timing header)
    server_ms: list[float] = field(default_factory=list)

    def summary(self, wall_s: float) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        app = np.asarray(self.server_ms) if self.server_ms else np.zeros(1)
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "requests_per_s": round(self.requests / wall_s, 1) if wall_s > 0 else None,
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            # inside the app (from its first byte in to its response start); the rest of the
            # client's figure is uvicorn, the OS, the loopback and the client's own event loop
            "server_p50_ms": round(float(np.percentile(app, 50)), 2),
            "server_p99_ms": round(float(np.percentile(app, 99)), 2),
        }


def server_time_ms(headers: Any) -> float | None:
    """The ``app`` duration of a Server-Timing header, in ms (None without one)."""
    for part in str(headers.get("server-timing", "")).split(","):
        name, _, params = part.strip().partition(";")
        if name == "app" and params.startswith("dur="):
            try:
                return float(params[4:])
            except ValueError:
                return None
    return None


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float | None:
    """CPU time so far of every process named ``postgres`` on this machine (the database server's
    postmaster and backends; Linux /proc); None when there is none (a database on another
    machine) or no /proc. Meant for a machine whose only PostgreSQL is the benchmark's; a backend
    that exits takes its time with it."""
    try:
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    except OSError:
        return None
    times = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        times.append(process_cpu_seconds(pid) or 0.0)
    return sum(times) if times else None


@contextmanager
def client_on_cpus(cpus: str | None) -> Iterator[None]:
    """Run this process (the load generator) on ``cpus`` for the block, then as before."""
    if cpus is None:
        yield
        return
    import torch

    from ..cpus import parse_cpus, pin_to_cpus

    before, threads = os.sched_getaffinity(0), torch.get_num_threads()
    pin_to_cpus(parse_cpus(cpus))
    try:
        yield
    finally:  # the CPUs and torch's thread count as they were, not as pinning would set them
        os.sched_setaffinity(0, before)
        torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def population_texts(n_users: int = 40, per_user: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """A small population for the model the readers score with (half prefer long answers)."""
    rng = np.random.default_rng(seed)
    words = [
        "clear",
        "detailed",
        "brief",
        "friendly",
        "formal",
        "example",
        "steps",
        "summary",
        "caveat",
        "source",
    ]
    out = []
    for u in range(n_users):
        for i in range(per_user):
            long = " ".join(rng.choice(words, size=12)) + f" answer {i}"
            short = " ".join(rng.choice(words, size=3)) + f" {i}"
            chosen, rejected = (long, short) if u % 2 == 0 else (short, long)
            out.append(
                {
                    "user_id": f"pop{u}",
                    "prompt": f"question {i}",
                    "chosen": chosen,
                    "rejected": rejected,
                }
            )
    return out


def prepare_home(home: Path, encoder: str, database: str | None = None) -> str:
    """Record a population, train ``bt`` on it, create an API key; returns the key. The store is
    ``home``'s SQLite file, or ``database``."""
    from ..engine import Engine
    from ..service.auth import KeyRing

    engine = Engine(home, database=database, encoder=encoder)
    engine.record(population_texts())
    engine.train("bt", {"training": {"epochs": 50, "patience": 5}})
    key = KeyRing(engine.store).create(name="bench")[1]
    engine.store.close()
    return key


class ServerProcess:
    """``python -m persona_engine.service`` on 127.0.0.1 with its own user directory, on its
    SQLite file or on ``database`` (passed in the environment)."""

    def __init__(
        self,
        home: Path,
        port: int,
        encoder: str,
        database: str | None = None,
        cpus: str | None = None,
    ):
        self.home, self.port, self.encoder, self.database = home, port, encoder, database
        self.cpus = cpus
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / "server.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 120.0) -> float:
        import httpx

        env = {**os.environ, "PERSONA_ENGINE_HOME": str(self.home), "HF_HUB_OFFLINE": "1"}
        if self.database is not None:
            env["PERSONA_ENGINE_DATABASE"] = self.database
        cmd = [
            sys.executable,
            "-m",
            "persona_engine.service",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--encoder",
            self.encoder,
            "--log-level",
            "warning",
            *(["--cpus", self.cpus] if self.cpus is not None else []),
        ]
        started = time.perf_counter()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not answer /health within {timeout:.0f}s; see {self.log}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux /proc), else None."""
        return None if self.proc is None else process_cpu_seconds(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing; what is committed is all that survives."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


async def _clients(
    url: str,
    key: str,
    cfg: ServeBenchConfig,
    *,
    writes: int,
    reads: int,
    tag: str,
    acked: list[tuple[str, str]],
    stop: threading.Event,
) -> tuple[KindStats, KindStats, float]:
    """``cfg.writers`` writer tasks and ``cfg.readers`` reader tasks sharing the request counts."""
    import httpx

    from .http_client import ClientError, LeanClient

    record, score = KindStats(), KindStats()
    rng = np.random.default_rng(cfg.seed)
    pool = [f"candidate reply {i} with {'many extra words ' * (i % 4)}" for i in range(200)]
    headers = {"Authorization": f"Bearer {key}"}
    if cfg.client == "lean":
        session: Any = LeanClient(url, headers, timeout=60.0)
    elif cfg.client == "httpx":
        limits = httpx.Limits(max_connections=cfg.writers + cfg.readers)
        session = httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60.0)
    else:
        raise ValueError(f"unknown load generator {cfg.client!r}; known: lean, httpx")
    async with session as client:

        async def call(stats: KindStats, path: str, body: dict[str, Any]) -> bool:
            stats.requests += 1
            t = time.perf_counter()
            try:
                r = await client.post(path, json=body)
            except (httpx.HTTPError, ClientError) as e:
                stats.errors[type(e).__name__] = stats.errors.get(type(e).__name__, 0) + 1
                return False
            stats.latencies_ms.append((time.perf_counter() - t) * 1000)
            took = server_time_ms(r.headers)
            if took is not None:
                stats.server_ms.append(took)
            if r.status_code >= 300:
                stats.errors[str(r.status_code)] = stats.errors.get(str(r.status_code), 0) + 1
                return False
            stats.ok += 1
            return True

        async def writer(w: int) -> None:
            for i in range(w, writes, cfg.writers):
                if stop.is_set():
                    return
                user, chosen = f"{tag}-w{w}-u{i % 50}", f"{tag} reply {i}: the preferred one"
                body = {
                    "user_id": user,
                    "prompt": f"prompt {i % 20}",
                    "chosen": chosen,
                    "rejected": f"{tag} reply {i}: the other",
                }
                if await call(record, "/v1/comparisons", body):
                    acked.append((user, chosen))

        async def reader(r: int) -> None:
            for i in range(r, reads, max(cfg.readers, 1)):
                if stop.is_set():
                    return
                cands = [pool[j] for j in rng.choice(len(pool), size=cfg.candidates, replace=False)]
                await call(
                    score,
                    "/v1/score",
                    {
                        "user_id": f"pop{i % 40}",
                        "prompt": f"question {i % 10}",
                        "candidates": cands,
                    },
                )

        started = time.perf_counter()
        await asyncio.gather(
            *(writer(w) for w in range(cfg.writers)),
            *(reader(r) for r in range(cfg.readers if reads else 0)),
        )
        return record, score, time.perf_counter() - started


def _stored(db: Path, acked: list[tuple[str, str]], tag: str) -> tuple[int, int, str]:
    """(acknowledged writes found in the store, rows of this run in the store, integrity)."""
    from ..schemas import content_hash
    from ..store import Store

    store = Store(db)
    try:
        rows = store.db.execute(
            "SELECT c.user_id, c.chosen_hash FROM comparisons c WHERE c.user_id LIKE ?",
            [f"{tag}-w%"],
        ).fetchall()
        present = {(u, h) for u, h in rows}
        found = sum((u, content_hash(c)) in present for u, c in acked)
        return found, len(rows), store.integrity_check()
    finally:
        store.close()


def load_run(server: ServerProcess, key: str, cfg: ServeBenchConfig) -> dict[str, Any]:
    acked: list[tuple[str, str]] = []
    cpu_before, client_before = server.cpu_seconds(), time.process_time()
    record, score, wall = asyncio.run(
        _clients(
            server.url,
            key,
            cfg,
            writes=cfg.writes,
            reads=cfg.reads,
            tag="load",
            acked=acked,
            stop=threading.Event(),
        )
    )
    cpu_after, client_cpu = server.cpu_seconds(), time.process_time() - client_before
    server.stop()
    found, stored, integrity = _stored(server.home / "persona.db", acked, "load")
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {
        "wall_s": round(wall, 2),
        "server_cpu_s": None if cpu is None else round(cpu, 2),
        "server_cpu_ms_per_request": None
        if cpu is None
        else round(1000 * cpu / max(1, record.requests + score.requests), 3),
        # the load generator shares the machine's cores with the server: its own CPU per request
        "client_cpu_ms_per_request": round(
            1000 * client_cpu / max(1, record.requests + score.requests), 3
        ),
        "record": record.summary(wall),
        "score": score.summary(wall),
        "writes_acknowledged": len(acked),
        "acknowledged_found": found,
        "rows_stored": stored,
        "lost": len(acked) - found,
        "integrity_check": integrity,
    }


def fault_run(server: ServerProcess, key: str, cfg: ServeBenchConfig) -> dict[str, Any]:
    """Writers until half of ``cfg.fault_writes`` are acknowledged, then SIGKILL, then restart."""
    acked: list[tuple[str, str]] = []
    stop = threading.Event()
    killed_at: dict[str, float] = {}

    def killer() -> None:
        while len(acked) < cfg.fault_writes // 2 and not stop.is_set():
            time.sleep(0.005)
        killed_at["acked"] = len(acked)
        server.kill()
        stop.set()  # writers stop after the requests in flight fail

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    record, _, wall = asyncio.run(
        _clients(
            server.url,
            key,
            cfg,
            writes=cfg.fault_writes,
            reads=0,
            tag="fault",
            acked=acked,
            stop=stop,
        )
    )
    stop.set()
    thread.join()
    restart_s = server.start()
    found, stored, integrity = _stored(server.home / "persona.db", acked, "fault")
    import httpx

    health = httpx.get(server.url + "/health", timeout=10).status_code
    server.stop()
    return {
        "killed_after_acknowledged": killed_at.get("acked"),
        "writes_attempted": record.requests,
        "writes_acknowledged": len(acked),
        "failed_in_flight": sum(record.errors.values()),
        "acknowledged_found_after_restart": found,
        "rows_stored": stored,
        "lost": len(acked) - found,
        "integrity_check": integrity,
        "restart_s": round(restart_s, 2),
        "health_after_restart": health,
        "wall_s": round(wall, 2),
    }


def run_serve_bench(
    cfg: ServeBenchConfig, *, home: Path | None = None, fault: bool = True
) -> dict[str, Any]:
    """Prepare a store, run the load run and (with ``fault``) the fault run; returns the figures."""
    owned = home is None
    home = Path(tempfile.mkdtemp(prefix="persona-bench-serve-")) if home is None else home
    home.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    key = prepare_home(home, cfg.encoder)
    prepare_s = time.perf_counter() - t
    server = ServerProcess(home, free_port(), cfg.encoder, cpus=cfg.server_cpus)
    try:
        start_s = server.start()
        result: dict[str, Any] = {
            "config": asdict(cfg),
            "host": HOST,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "prepare_s": round(prepare_s, 2),
            "server_start_s": round(start_s, 2),
        }
        with client_on_cpus(cfg.client_cpus):
            result["load"] = load_run(server, key, cfg)
            if fault:
                server.start()
                result["fault"] = fault_run(server, key, cfg)
        result["machine"] = {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }
        return result
    finally:
        server.kill()
        if owned:
            import shutil

            shutil.rmtree(home, ignore_errors=True)
