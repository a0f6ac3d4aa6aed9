"""Helpers of the dashboard tests: traffic recorded after training (so there are online outcomes)
for two tenants, a logged-in client per tenant, and the figures a page shows."""

from __future__ import annotations

import html
import re
from typing import Any

from fastapi.testclient import TestClient
from service_support import Api, population

#: ids only one tenant has: a page of the other tenant must never contain them
DEFAULT_ONLY = "only-default-user"
SHOP_ONLY = "only-shop-user"
SCRIPT_USER = '<script>alert("id")</script>'
SCRIPT_TEXT = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def record_traffic(api: Api) -> None:
    """Comparisons recorded through the API after the models were trained: scored online under
    the active model first. The default tenant gets its trained users' next comparisons, two new
    users, a user whose id and texts are HTML, and an offline figure that online accuracy falls
    below (a warning); the 'shop' tenant gets users of its own, onboarded."""
    default = population(8, 12)  # u0..u5 continue (their first 8 are stored), u6, u7 are new
    default += [{**c, "user_id": DEFAULT_ONLY} for c in population(1, 6)]
    default += [
        {
            "user_id": SCRIPT_USER,
            "prompt": f"<b>q{i}</b>",
            "chosen": SCRIPT_TEXT,
            "rejected": f"plain {i}",
        }
        for i in range(6)
    ]
    shop = population(4, 10, prefix="shopper-") + [
        {**c, "user_id": SHOP_ONLY} for c in population(2, 8)[8:]
    ]
    for tenant, comps in (("", default), ("shop", shop)):
        r = api.call("POST", "/v1/comparisons/batch", tenant=tenant, json={"comparisons": comps})
        assert r.status_code == 201, r.text
    for user in ("shopper-0", "shopper-1", "shopper-2", "shopper-3", SHOP_ONLY):
        assert (
            api.call("POST", "/v1/onboard", tenant="shop", json={"user_id": user}).status_code
            == 200
        )
    for user in (DEFAULT_ONLY, SCRIPT_USER):
        assert api.call("POST", "/v1/onboard", json={"user_id": user}).status_code == 200
    api.engine.set_offline_figure("svc_peruser-v1", 0.97, ci=(0.95, 0.99), source="bench reward")
    api.engine.set_user_attributes(SCRIPT_USER, {"note": "<i>html</i>", "age": 30})


def login(api: Api, tenant: str = "") -> TestClient:
    """A client of the same app holding the dashboard cookie of ``tenant``'s key."""
    client = TestClient(api.client.app, follow_redirects=False)
    r = client.post("/dashboard/login", data={"key": api.keys[tenant]})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard", r.text
    return client


def figures(page: str) -> dict[str, str]:
    """The ``data-figure`` cells of a page: key -> the text shown."""
    return {
        html.unescape(k): html.unescape(v).strip()
        for k, v in re.findall(r'data-figure="([^"]+)">([^<]*)<', page)
    }


def fig(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def interval(ci: list[float] | None) -> str:
    return "–" if ci is None else f"{ci[0]:.3f}–{ci[1]:.3f}"


def without_images(page: str) -> str:
    """The page without its inlined PNGs (base64 may contain any short string by chance)."""
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)


def expected_summary_figures(model: dict[str, Any]) -> dict[str, str]:
    """What the overview must show for one model version of ``/v1/metrics/online``."""
    out: dict[str, str] = {}

    def put(key: str, s: dict[str, Any]) -> None:
        out[f"{key}:accuracy"] = fig(s["accuracy"])
        out[f"{key}:ci"] = interval(s["ci"])
        out[f"{key}:n"] = str(s["n"])
        out[f"{key}:users"] = str(s["users"])
        out[f"{key}:log_loss"] = fig(s["log_loss"])

    m = model["model_id"]
    for part in ("overall", "window", "new_items"):
        put(f"{m}:{part}", model[part])
    for b in model["by_answers"]:
        put(f"{m}:answers:{b['answers']}:all", b["all"])
        put(f"{m}:answers:{b['answers']}:new_items", b["new_items"])
    return out
