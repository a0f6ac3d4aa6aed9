"""Online evaluation through the service (/v1/metrics/online) and Prometheus metrics (/metrics)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from service_support import population


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_recorded_comparisons_are_scored_for_their_tenant_only(trained_api):
    api = trained_api
    active = api.engine.store.active_model().id
    new = population(n_users=2, per_user=3, prefix="late")
    for c in new:
        c["prompt"] += " (later)"
    assert (
        api.call("POST", "/v1/comparisons/batch", json={"comparisons": new[:3]}).status_code == 201
    )
    shop = api.call("POST", "/v1/comparisons/batch", tenant="shop", json={"comparisons": new[3:]})
    assert shop.status_code == 201
    # resent: stored once, one outcome
    api.call("POST", "/v1/comparisons/batch", json={"comparisons": new[:3]})

    mine = api.call("GET", "/v1/metrics/online").json()
    assert mine["active_model"] == active
    (m,) = mine["models"]
    assert m["model_id"] == active and m["overall"]["n"] == 3 and m["overall"]["users"] == 1
    # a new user: 0 answers before the first, 1 and 2 before the next ones
    assert [b["all"]["n"] for b in m["by_answers"]] == [1, 2, 0, 0]
    theirs = api.call("GET", "/v1/metrics/online", tenant="shop", params={"worst": 5}).json()
    (t,) = theirs["models"]
    assert t["overall"]["n"] == 3
    # the shop's user ids come back as the shop knows them, never as stored (tenant-prefixed)
    assert [u["user_id"] for u in t["worst_users"]] in ([], ["late1"])
    bad = api.call("GET", "/v1/metrics/online", params={"since": "yesterday-ish"})
    assert bad.status_code == 422 and "--since must be a date" in bad.json()["error"]["message"]
    assert api.client.get("/v1/metrics/online").status_code == 401


def test_prometheus_metrics_follow_requests_and_online_outcomes(trained_api):
    api = trained_api
    active = api.engine.store.active_model().id
    new = population(n_users=1, per_user=4, prefix="prom")
    for c in new:
        c["prompt"] += " (prom)"
    api.call("POST", "/v1/comparisons/batch", json={"comparisons": new})
    api.call("GET", "/v1/users/prom0")
    api.call("GET", "/v1/users/nobody")
    resp = api.client.get("/metrics")  # no key needed, like /health
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    got = samples(resp.text)
    route = (("method", "GET"), ("route", "/v1/users/{user_id:path}"))
    assert got[("persona_http_requests_total", (*route[:1], route[1], ("status", "200")))] == 1
    assert got[("persona_http_requests_total", (*route[:1], route[1], ("status", "404")))] == 1
    assert got[("persona_http_request_duration_seconds_count", route)] == 2
    batch = (("method", "POST"), ("route", "/v1/comparisons/batch"), ("status", "201"))
    assert got[("persona_http_requests_total", batch)] == 1
    assert not any("prom0" in str(labels) for _, labels in got)  # one series per route, no user ids
    online = api.engine.online_report()["models"][0]["overall"]
    assert got[("persona_online_outcomes_total", (("model_id", active),))] == online["n"] == 4
    assert got[("persona_online_accuracy", (("model_id", active),))] == online["accuracy"]
    assert got[("persona_write_queue_depth", ())] == 0
    assert got[("persona_writes_completed_total", ())] >= 1
    assert ("persona_training_jobs", (("state", "running"),)) in got
    assert got[("persona_online_eval_errors_total", ())] == 0


def test_every_response_tells_the_servers_own_time(trained_api):
    """Server-Timing: what persona bench serve sets beside the client's figure."""
    from persona_engine.bench.serve import server_time_ms

    api = trained_api
    for resp in (
        api.call("GET", "/v1/users/nobody"),  # an error answer too
        api.call("POST", "/v1/score", json={"user_id": "x", "prompt": "q", "candidates": ["a"]}),
        api.client.get("/health"),
    ):
        took = server_time_ms(resp.headers)
        assert took is not None and 0 < took < 60_000, resp.headers
    assert server_time_ms({"server-timing": "db;dur=3, app;dur=1.5"}) == 1.5
    assert server_time_ms({}) is None
