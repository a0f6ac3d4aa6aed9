"""``persona bench serve --database postgresql://... --replicas N``: several servers on one store.

N server processes (each with its own user directory) on one PostgreSQL database (a throwaway
server, :mod:`persona_engine.testing.postgres`, when no URL is given). Writers and readers are
spread evenly over the replicas.

Load run: as for one server (:mod:`.serve`), then every acknowledged write must be stored exactly
once. Fault run: writers on every replica; once half the planned writes are acknowledged, replica
0 gets SIGKILL. The others keep serving (their errors during the run are reported), replica 0 is
restarted, every acknowledged write must be in the store, and the restarted replica must answer
for a user written through another replica while it was down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .serve import (
    HOST,
    KindStats,
    ServeBenchConfig,
    ServerProcess,
    _clients,
    client_on_cpus,
    free_port,
    postgres_cpu_seconds,
    prepare_home,
)


def _stored(database: str, acked: list[tuple[str, str]], tag: str) -> dict[str, Any]:
    """Acknowledged writes found, rows of this run, rows stored more than once, integrity."""
    from ..schemas import content_hash
    from ..store import open_store

    store = open_store(database)
    try:
        rows = store.read(
            "SELECT user_id, chosen_hash FROM comparisons WHERE user_id LIKE ?", (f"{tag}%",)
        )
        present = {(u, h) for u, h in rows}
        found = sum((u, content_hash(c)) in present for u, c in acked)
        return {
            "acknowledged_found": found,
            "rows_stored": len(rows),
            "stored_twice": len(rows) - len(present),
            "lost": len(acked) - found,
            "integrity_check": store.integrity_check(),
        }
    finally:
        store.close()


def _share(cfg: ServeBenchConfig, n: int, i: int) -> ServeBenchConfig:
    """Replica ``i``'s part of the clients (at least one writer and one reader each)."""
    return dataclasses.replace(
        cfg,
        writers=max(1, cfg.writers // n + (i < cfg.writers % n)),
        readers=max(1, cfg.readers // n + (i < cfg.readers % n)),
    )


async def _spread(
    servers: list[ServerProcess],
    key: str,
    cfg: ServeBenchConfig,
    *,
    writes: int,
    reads: int,
    tag: str,
    acked: list[tuple[str, str]],
    stops: list[threading.Event],
) -> tuple[list[tuple[KindStats, KindStats, float]], float]:
    n = len(servers)
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            _clients(
                s.url,
                key,
                _share(cfg, n, i),
                writes=writes // n,
                reads=reads // n,
                tag=f"{tag}-r{i}",
                acked=acked,
                stop=stops[i],
            )
            for i, s in enumerate(servers)
        )
    )
    return list(results), time.perf_counter() - started


def _cpu(servers: list[ServerProcess]) -> dict[str, float | None]:
    """CPU seconds so far: the replicas together, the PostgreSQL processes on this machine (None
    when the database runs elsewhere), this process."""
    return {
        "servers": sum(s.cpu_seconds() or 0.0 for s in servers),
        "database": postgres_cpu_seconds(),
        "client": time.process_time(),
    }


def _per_request_ms(before: float | None, after: float | None, n: int) -> float | None:
    return None if before is None or after is None else round(1000 * (after - before) / n, 3)


def _merge(stats: list[KindStats]) -> KindStats:
    out = KindStats()
    for s in stats:
        out.requests += s.requests
        out.ok += s.ok
        out.latencies_ms += s.latencies_ms
        out.server_ms += s.server_ms
        for k, v in s.errors.items():
            out.errors[k] = out.errors.get(k, 0) + v
    return out


def load_run(
    servers: list[ServerProcess], key: str, cfg: ServeBenchConfig, database: str
) -> dict[str, Any]:
    acked: list[tuple[str, str]] = []
    stops = [threading.Event() for _ in servers]
    cpu_before = _cpu(servers)
    per, wall = asyncio.run(
        _spread(
            servers,
            key,
            cfg,
            writes=cfg.writes,
            reads=cfg.reads,
            tag="load",
            acked=acked,
            stops=stops,
        )
    )
    cpu_after = _cpu(servers)
    record, score = _merge([p[0] for p in per]), _merge([p[1] for p in per])
    n = max(1, record.requests + score.requests)
    cpu = {k: _per_request_ms(cpu_before[k], cpu_after[k], n) for k in cpu_after}
    return {
        "wall_s": round(wall, 2),
        # CPU per request: the replicas' processes, the database server's, the load generator's
        "server_cpu_ms_per_request": cpu["servers"],
        "database_cpu_ms_per_request": cpu["database"],
        "client_cpu_ms_per_request": cpu["client"],
        "record": record.summary(wall),
        "score": score.summary(wall),
        "per_replica": [{"record": r.summary(w), "score": s.summary(w)} for r, s, w in per],
        "writes_acknowledged": len(acked),
        **_stored(database, acked, "load"),
    }


def fault_run(
    servers: list[ServerProcess], key: str, cfg: ServeBenchConfig, database: str
) -> dict[str, Any]:
    """SIGKILL replica 0 at half the planned writes; the others go on; restart it."""
    import httpx

    acked: list[tuple[str, str]] = []
    stops = [threading.Event() for _ in servers]
    killed: dict[str, Any] = {}

    def killer() -> None:
        while len(acked) < cfg.fault_writes // 2 and not stops[0].is_set():
            time.sleep(0.005)
        killed["acked"] = len(acked)
        killed["at"] = time.perf_counter()
        servers[0].kill()
        stops[0].set()  # replica 0's writers stop once their requests in flight fail

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    per, wall = asyncio.run(
        _spread(
            servers,
            key,
            cfg,
            writes=cfg.fault_writes,
            reads=cfg.reads // 2,
            tag="fault",
            acked=acked,
            stops=stops,
        )
    )
    stops[0].set()
    thread.join()
    restart_s = servers[0].start()
    # a user written through another replica while replica 0 was down, read through replica 0
    caught_up = None
    if len(servers) > 1:
        user = next((u for u, _ in reversed(acked) if u.startswith("fault-r1")), None)
        if user is not None:
            r = httpx.get(
                f"{servers[0].url}/v1/users/{user}",
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            caught_up = r.status_code == 200 and r.json().get("n_comparisons", 0) > 0
    others = per[1:]
    return {
        "killed_after_acknowledged": killed.get("acked"),
        "writes_acknowledged": len(acked),
        "killed_replica_failed_in_flight": sum(per[0][0].errors.values()),
        "other_replicas": {
            "record": _merge([p[0] for p in others]).summary(wall),
            "score": _merge([p[1] for p in others]).summary(wall),
            "error_rate": round(
                sum(sum(p[0].errors.values()) + sum(p[1].errors.values()) for p in others)
                / max(1, sum(p[0].requests + p[1].requests for p in others)),
                4,
            ),
        },
        "restart_s": round(restart_s, 2),
        "restarted_replica_reads_other_replicas_writes": caught_up,
        "wall_s": round(wall, 2),
        **_stored(database, acked, "fault"),
    }


def run_replicas_bench(
    cfg: ServeBenchConfig,
    *,
    database: str | None = None,
    replicas: int = 2,
    fault: bool = True,
) -> dict[str, Any]:
    """Start (or use) PostgreSQL, ``replicas`` servers on it, the load and fault runs."""
    from ..testing.postgres import throwaway_postgres

    root = Path(tempfile.mkdtemp(prefix="persona-bench-replicas-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, True)
        if database is None:
            server = stack.enter_context(throwaway_postgres())
            database = server.create_database("persona_bench")
        t = time.perf_counter()
        key = prepare_home(root / "prepare", cfg.encoder, database)
        prepare_s = time.perf_counter() - t
        servers = [
            ServerProcess(root / f"replica{i}", free_port(), cfg.encoder, database, cfg.server_cpus)
            for i in range(replicas)
        ]
        for s in servers:
            s.home.mkdir(parents=True)
            stack.callback(s.kill)
        start_s = [round(s.start(), 2) for s in servers]
        stack.enter_context(client_on_cpus(cfg.client_cpus))
        result: dict[str, Any] = {
            "config": {**dataclasses.asdict(cfg), "replicas": replicas, "store": "postgresql"},
            "host": HOST,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "prepare_s": round(prepare_s, 2),
            "server_start_s": start_s,
            "load": load_run(servers, key, cfg, database),
        }
        if fault:
            result["fault"] = fault_run(servers, key, cfg, database)
        result["machine"] = {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }
        for s in servers:
            s.stop()
        return result
    raise AssertionError("unreachable")  # for mypy: ExitStack may swallow exceptions
