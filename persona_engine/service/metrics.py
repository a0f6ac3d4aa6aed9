"""Prometheus metrics of one service process, served at ``/metrics`` (prometheus-client's text
format; no key needed, like ``/health``: the figures name routes and model versions, never users).

- ``persona_http_requests_total{route,method,status}`` and ``persona_http_request_duration_seconds``
  (a histogram per route template, so ``/v1/users/{user_id}`` is one series, not one per user);
- ``persona_write_queue_depth``, ``persona_writes_completed_total``;
- ``persona_training_jobs{state}``;
- ``persona_index_profiles{model_id}`` and ``persona_index_sync_lag{model_id}`` (profile changes
  in the store that the loaded similar-user index has not applied yet);
- ``persona_online_accuracy{model_id}`` / ``persona_online_log_loss{model_id}`` over each
  version's last ``ONLINE_WINDOW`` outcomes, ``persona_online_outcomes_total{model_id}``,
  ``persona_online_eval_errors_total``.

The gauges are read when Prometheus scrapes (a custom collector), so they cost nothing between
scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as render
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..retrieval.sync import log_head

if TYPE_CHECKING:
    from .state import ServiceState

#: outcomes per model version behind the online gauges
ONLINE_WINDOW = 1000
#: request latency buckets (seconds): sub-millisecond reads up to slow training calls
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

__all__ = ["CONTENT_TYPE_LATEST", "MetricsMiddleware", "ServiceMetrics"]


class ServiceMetrics:
    """The registry of one app (not the global one: two apps in one process stay apart)."""

    def __init__(self, state: ServiceState):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "persona_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "persona_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template.",
            ["route", "method"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(state))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def render(self) -> bytes:
        return render(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request under the route template it matched, and tells the
    client the time in a ``Server-Timing: app;dur=<ms>`` header."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app raises before responding

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # the app's own time for this request, for clients that separate it from the
                # network, the OS and their own event loop (persona bench serve does)
                took = 1000 * (time.perf_counter() - started)
                timing = (b"server-timing", f"app;dur={took:.3f}".encode())
                message = {**message, "headers": [*message.get("headers", []), timing]}
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(route, scope["method"], status, time.perf_counter() - started)


class _StateCollector(Collector):
    def __init__(self, state: ServiceState):
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        yield GaugeMetricFamily(
            "persona_write_queue_depth",
            "Writes waiting for the single writer thread.",
            value=state.writer.pending,
        )
        yield CounterMetricFamily(
            "persona_writes_completed",
            "Writes the writer thread has run (committed or failed).",
            value=state.writer.completed,
        )
        jobs = GaugeMetricFamily(
            "persona_training_jobs", "Training runs of this process by state.", labels=["state"]
        )
        by_state: dict[str, int] = {"running": 0, "succeeded": 0, "failed": 0}
        for job in state.training.jobs.values():
            by_state[job.state] = by_state.get(job.state, 0) + 1
        for name, n in sorted(by_state.items()):
            jobs.add_metric([name], n)
        yield jobs
        yield from self._indexes()
        yield from self._online()

    def _indexes(self) -> Iterator[Metric]:
        size = GaugeMetricFamily(
            "persona_index_profiles",
            "Profiles in each loaded similar-user index.",
            labels=["model_id"],
        )
        lag = GaugeMetricFamily(
            "persona_index_sync_lag",
            "Profile changes in the store not yet applied to the loaded index.",
            labels=["model_id"],
        )
        loaded = self.state.engine._indexes.loaded()
        head = log_head(self.state.engine.store) if loaded else 0
        for model_id, index in sorted(loaded.items()):
            size.add_metric([model_id], len(index))
            lag.add_metric([model_id], max(0, head - int(index.meta.get("seq", 0))))
        yield size
        yield lag

    def _online(self) -> Iterator[Metric]:
        engine = self.state.engine
        acc = GaugeMetricFamily(
            "persona_online_accuracy",
            f"Accuracy of each model version on its last {ONLINE_WINDOW} online outcomes.",
            labels=["model_id"],
        )
        loss = GaugeMetricFamily(
            "persona_online_log_loss",
            f"Log-loss of each model version on its last {ONLINE_WINDOW} online outcomes.",
            labels=["model_id"],
        )
        total = CounterMetricFamily(
            "persona_online_outcomes",
            "Comparisons each model version scored before they were stored.",
            labels=["model_id"],
        )
        for model_id, n, margins in _recent_margins(self.state, ONLINE_WINDOW):
            acc.add_metric([model_id], float((margins > 0).mean()))
            loss.add_metric([model_id], float(np.logaddexp(0.0, -margins).mean()))
            total.add_metric([model_id], n)
        yield acc
        yield loss
        yield total
        yield CounterMetricFamily(
            "persona_online_eval_errors",
            "Batches stored without online outcomes because scoring them failed.",
            value=engine.online.errors,
        )


def _recent_margins(state: ServiceState, window: int) -> list[tuple[str, int, np.ndarray]]:
    """Per model version with outcomes: (id, number of outcomes, margins of the last ``window``)."""
    return state.reader.store.online_margins(window)
