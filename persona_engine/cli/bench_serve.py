"""``persona bench serve``: load and kill -9 runs against a real server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .bench import bench


@bench.command("serve")
@click.option("--writers", default=8, show_default=True, help="Concurrent writer connections.")
@click.option("--readers", default=8, show_default=True, help="Concurrent reader connections.")
@click.option(
    "--writes", default=2000, show_default=True, help="Comparisons recorded in the load run."
)
@click.option("--reads", default=2000, show_default=True, help="Score requests in the load run.")
@click.option("--candidates", default=8, show_default=True, help="Candidates per score request.")
@click.option(
    "--encoder",
    default="hashing",
    show_default=True,
    type=click.Choice(["hashing", "minilm"]),
    help="hashing needs no model; minilm is the real default encoder.",
)
@click.option(
    "--fault-writes",
    default=1000,
    show_default=True,
    help="Writes planned in the fault run (the kill comes at half).",
)
@click.option("--no-fault", is_flag=True, help="Skip the kill -9 run.")
@click.option(
    "--client",
    default="lean",
    show_default=True,
    type=click.Choice(["lean", "httpx"]),
    help="The load generator: 'lean' (keep-alive HTTP/1.1 on asyncio streams, little CPU per "
    "request) or 'httpx' (its own CPU competes with the server's on a small machine).",
)
@click.option(
    "--server-cpus",
    default=None,
    help="CPUs for each server process (`persona serve --cpus`), e.g. 0. Default: the OS decides.",
)
@click.option(
    "--client-cpus",
    default=None,
    help="CPUs for the load generator (this process), e.g. 1. Default: the OS decides.",
)
@click.option(
    "--database",
    default=None,
    help="A postgresql:// URL the servers share (with --replicas; default: a throwaway server).",
)
@click.option(
    "--replicas",
    default=1,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Server processes on one PostgreSQL database (more than 1 needs PostgreSQL).",
)
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the store here (default: a temporary directory, removed after).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the result JSON here (e.g. benchmarks/results/serve.json).",
)
def bench_serve(
    writers: int,
    readers: int,
    writes: int,
    reads: int,
    candidates: int,
    encoder: str,
    fault_writes: int,
    no_fault: bool,
    client: str,
    server_cpus: str | None,
    client_cpus: str | None,
    database: str | None,
    replicas: int,
    home: Path | None,
    out: Path | None,
) -> None:
    """Requests/s and p50/p99 latency of record and score; acknowledged writes vs stored; kill -9."""
    from ..bench.serve import ServeBenchConfig, run_serve_bench

    cfg = ServeBenchConfig(
        writers=writers,
        readers=readers,
        writes=writes,
        reads=reads,
        candidates=candidates,
        encoder=encoder,
        fault_writes=fault_writes,
        client=client,
        server_cpus=server_cpus,
        client_cpus=client_cpus,
    )
    if database is not None or replicas > 1:
        _replicas(cfg, database, replicas, not no_fault, out)
        return
    result = run_serve_bench(cfg, home=home, fault=not no_fault)
    load = result["load"]
    click.echo(f"load run: {writers} writers + {readers} readers on 127.0.0.1, {load['wall_s']} s")
    _latency_table(load)
    if load.get("server_cpu_ms_per_request") is not None:
        click.echo(
            f"server CPU {load['server_cpu_s']} s: {load['server_cpu_ms_per_request']} ms per request; "
            f"the client's own {load['client_cpu_ms_per_request']} ms (load average at start {result['load_average_at_start']})"
        )
    click.echo(
        f"acknowledged writes {load['writes_acknowledged']}, found in the store {load['acknowledged_found']}, lost {load['lost']}, integrity {load['integrity_check']}"
    )
    if "fault" in result:
        f = result["fault"]
        click.echo(
            f"fault run: SIGKILL after {f['killed_after_acknowledged']} acknowledged writes; acknowledged {f['writes_acknowledged']}, "
            f"found after restart {f['acknowledged_found_after_restart']}, lost {f['lost']}, integrity {f['integrity_check']}, "
            f"restart {f['restart_s']} s"
        )
    _write(result, out)


def _replicas(cfg: Any, database: str | None, replicas: int, fault: bool, out: Path | None) -> None:
    from ..bench.serve_replicas import run_replicas_bench
    from ..errors import InvalidInputError
    from ..store.postgres import is_postgres_url

    if database is not None and not is_postgres_url(database):
        raise InvalidInputError("--database must be a postgresql:// URL (replicas share it)")
    result = run_replicas_bench(cfg, database=database, replicas=replicas, fault=fault)
    load = result["load"]
    click.echo(
        f"load run: {replicas} replicas on PostgreSQL, {cfg.writers} writers + {cfg.readers} "
        f"readers spread over them, {load['wall_s']} s"
    )
    _latency_table(load)
    db = load["database_cpu_ms_per_request"]
    click.echo(
        f"CPU per request: the replicas {load['server_cpu_ms_per_request']} ms, PostgreSQL "
        f"{'not measured (not on this machine)' if db is None else f'{db} ms'}, "
        f"the client {load['client_cpu_ms_per_request']} ms"
    )
    click.echo(
        f"acknowledged writes {load['writes_acknowledged']}, found {load['acknowledged_found']}, "
        f"stored twice {load['stored_twice']}, lost {load['lost']}, integrity {load['integrity_check']}"
    )
    if "fault" in result:
        f = result["fault"]
        other = f["other_replicas"]
        click.echo(
            f"fault run: SIGKILL of replica 0 after {f['killed_after_acknowledged']} acknowledged "
            f"writes; acknowledged {f['writes_acknowledged']}, found {f['acknowledged_found']}, "
            f"lost {f['lost']}; the other replicas: {other['record']['ok']} writes and "
            f"{other['score']['ok']} scores ok, error rate {other['error_rate']}; replica 0 "
            f"restarted in {f['restart_s']} s, reads the others' writes: "
            f"{f['restarted_replica_reads_other_replicas_writes']}"
        )
    _write(result, out)


def _latency_table(load: dict[str, Any]) -> None:
    """Per kind: requests, req/s, p50/p99 as the client saw them and inside the server."""
    click.echo(
        f"{'kind':<8}{'requests':>10}{'ok':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'server p50':>12}{'server p99':>12}"
    )
    for kind in ("record", "score"):
        k = load[kind]
        click.echo(
            f"{kind:<8}{k['requests']:>10}{k['ok']:>8}{k['requests_per_s']:>9}{k['p50_ms']:>9}"
            f"{k['p99_ms']:>9}{k['server_p50_ms']:>12}{k['server_p99_ms']:>12}"
        )


def _write(result: dict[str, Any], out: Path | None) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {out}")
