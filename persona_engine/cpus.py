"""Which CPUs a long-running process of the engine runs on (``persona serve --cpus``).

A Python server holds one interpreter lock, so its Python work uses one core at a time whatever the
machine has. Left to the OS, its threads (the event loop, the thread pool, the writer) are spread
over every core, and each hand-over of the lock between threads on different cores costs a
wake-up across cores: measured on this 2-core machine, pinning `persona serve` to one core halved
its CPU time per request (0.85 against 1.7 ms) and cut its p99 (see BENCHMARKS.md, HTTP service).
Pinning is opt-in: several replicas on one machine want different cores, and an encoder that runs
torch on many threads wants more than one.
"""

from __future__ import annotations

import os

from .errors import InvalidInputError


def parse_cpus(text: str) -> list[int]:
    """``"0"``, ``"0,2"`` or ``"0-3"`` (and combinations) as a sorted list of CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if dash else (int(part), int(part))
        except ValueError:
            raise InvalidInputError(
                f"--cpus takes CPU numbers like 0, 0,2 or 0-3; got {text!r}"
            ) from None
        if first < 0 or last < first:
            raise InvalidInputError(f"--cpus: {part!r} is not a range of CPU numbers")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def pin_to_cpus(cpus: list[int]) -> list[int]:
    """Run this process (every thread, and torch's intra-op pool sized to match) on ``cpus`` only;
    returns the CPUs it now runs on. Linux only."""
    if not hasattr(os, "sched_setaffinity"):
        raise InvalidInputError("--cpus needs Linux (os.sched_setaffinity)")
    machine = os.cpu_count() or 1
    if not cpus or max(cpus) >= machine:
        raise InvalidInputError(
            f"--cpus: {cpus} is not a set of this machine's CPUs (0-{machine - 1})"
        )
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as e:  # e.g. a container's cpuset leaves these out
        raise InvalidInputError(f"--cpus: cannot run on CPUs {cpus}: {e.strerror}") from None
    import torch

    torch.set_num_threads(len(cpus))
    return sorted(os.sched_getaffinity(0))
