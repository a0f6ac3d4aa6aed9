"""The dashboard through the TestClient: login, every page's figures against the API and the
engine, tenants kept apart, HTML escaped, and a try-it form that stores nothing."""

from __future__ import annotations

import base64
import html
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dashboard_support import (
    DEFAULT_ONLY,
    SCRIPT_TEXT,
    SCRIPT_USER,
    SHOP_ONLY,
    expected_summary_figures,
    fig,
    figures,
    login,
    record_traffic,
    without_images,
)
from fastapi.testclient import TestClient
from markupsafe import escape
from service_support import Api, make_engine, open_api

from persona_engine.service.dashboard import COOKIE
from persona_engine.service.dashboard_cache import PageCache
from persona_engine.service.dashboard_data import pca_2d, profile_map

PAGES = ["/dashboard", "/dashboard/users", "/dashboard/user?id=u1"]


@pytest.fixture
def dash(trained_api: Api) -> Iterator[Api]:
    record_traffic(trained_api)
    yield trained_api


def _tenant_users(api: Api, tenant: str) -> list[str]:
    return api.engine.store.user_ids(tenant=tenant)


def _api_id(tenant: str, stored: str) -> str:
    return stored.split("\x1f", 1)[1] if tenant else stored


def _pngs(page: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    ]


# -- login --------------------------------------------------------------------------------------
def test_pages_without_a_valid_key_redirect_to_the_login_page(dash: Api) -> None:
    anonymous = TestClient(dash.client.app, follow_redirects=False)
    wrong = TestClient(
        dash.client.app, follow_redirects=False, cookies={COOKIE: "pe_0000abcd_" + "x" * 43}
    )
    for client in (anonymous, wrong):
        for path in PAGES:
            r = client.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
            assert "u1" not in r.text and "accuracy" not in r.text
        r = client.post("/dashboard/user/rank", data={"id": "u1", "candidates": "a\nb"})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
    assert (
        f"{COOKIE}=" in wrong.get("/dashboard").headers["set-cookie"]
    )  # the bad cookie is dropped
    # an API key header is for the API: the dashboard reads its own cookie only
    r = anonymous.get("/dashboard", headers=dash.headers())
    assert r.status_code == 303
    login_page = anonymous.get("/dashboard/login")
    assert login_page.status_code == 200 and 'name="key"' in login_page.text


def test_login_sets_a_strict_http_only_cookie_and_refuses_a_wrong_key(dash: Api) -> None:
    client = TestClient(dash.client.app, follow_redirects=False)
    for key in ("", "not a key", "pe_0000abcd_" + "y" * 43):
        r = client.post("/dashboard/login", data={"key": key})
        assert r.status_code == 401 and 'id="login-error"' in r.text
        assert "set-cookie" not in r.headers and (not key or key not in r.text)  # never echoed
    r = client.post("/dashboard/login", data={"key": dash.keys["shop"]})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
    page = client.get("/dashboard")
    assert page.status_code == 200 and "tenant <b>shop</b>" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert client.get("/dashboard/login").status_code == 303  # logged in already
    r = client.post("/dashboard/logout")
    assert r.status_code == 303 and client.get("/dashboard").status_code == 303


def test_forms_posted_from_another_site_are_refused(dash: Api) -> None:
    client = TestClient(dash.client.app, follow_redirects=False)
    elsewhere = {"sec-fetch-site": "cross-site"}
    r = client.post("/dashboard/login", data={"key": dash.keys[""]}, headers=elsewhere)
    assert r.status_code == 403 and "set-cookie" not in r.headers
    r = client.post(
        "/dashboard/login", data={"key": dash.keys[""]}, headers={"sec-fetch-site": "same-origin"}
    )
    assert r.status_code == 303 and "set-cookie" in r.headers
    r = client.post(
        "/dashboard/user/rank", data={"id": "u1", "candidates": "a\nb"}, headers=elsewhere
    )
    assert r.status_code == 403


def test_a_revoked_key_is_logged_out_on_the_next_page(dash: Api) -> None:
    keyring = dash.client.app.state.service.keys
    key_id, key = keyring.create(tenant="shop", name="short-lived")
    client = TestClient(dash.client.app, follow_redirects=False)
    assert client.post("/dashboard/login", data={"key": key}).status_code == 303
    assert client.get("/dashboard/users").status_code == 200
    keyring.revoke(key_id)
    r = client.get("/dashboard/users")
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"


# -- the pages --------------------------------------------------------------------------------
def test_overview_shows_the_online_figures_of_the_api_and_the_tenants_counts(dash: Api) -> None:
    client = login(dash)
    page = client.get("/dashboard")
    assert page.status_code == 200
    shown = figures(page.text)
    report = dash.call("GET", "/v1/metrics/online").json()
    assert [m["model_id"] for m in report["models"]] == ["svc_peruser-v1"]
    model = report["models"][0]
    assert model["overall"]["n"] > 0
    expected = expected_summary_figures(model)
    assert {k: shown.get(k) for k in expected} == expected
    assert shown["svc_peruser-v1:offline:accuracy"].startswith("0.970 (0.950–0.990)")
    assert shown["bt-v1:offline:accuracy"] == "–"
    warnings = [
        html.unescape(w)
        for w in re.findall(r"<p class=\"warning\" data-warning>([^<]*)<", page.text)
    ]
    assert model["warning"] and warnings == [model["warning"]]
    worst = [html.unescape(u) for u in re.findall(r"data-worst-user>([^<]*)</a>", page.text)]
    assert worst == [u["user_id"] for u in model["worst_users"]] and worst
    store = dash.engine.store
    users = _tenant_users(dash, "")
    assert (
        shown["counts:users"]
        == str(len(users))
        == str(dash.call("GET", "/v1/status").json()["users"])
    )
    assert shown["counts:comparisons"] == str(sum(store.count_comparisons(u) for u in users))
    profiles = sum(store.profile(u, m.id) is not None for u in users for m in store.models())
    assert shown["counts:profiles"] == str(profiles)
    assert shown["counts:online_outcomes"] == str(len(store.online_outcomes(tenant="")))
    plots = _pngs(page.text)
    assert len(plots) == 2 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in plots)


def test_overview_follows_new_comparisons_computed_in_the_background(dash: Api) -> None:
    cache = dash.client.app.state.dashboard_cache
    cache.refresh_s = 0.0  # recompute as soon as the data changes
    client = login(dash)
    before = int(figures(client.get("/dashboard").text)["svc_peruser-v1:overall:n"])
    comp = {"user_id": "u0", "prompt": "fresh", "chosen": "long fresh answer", "rejected": "no"}
    assert dash.call("POST", "/v1/comparisons", json=comp).status_code == 201
    # served at once from the last computation, while the new one runs in the background
    assert int(figures(client.get("/dashboard").text)["svc_peruser-v1:overall:n"]) == before
    cache.settle()
    assert int(figures(client.get("/dashboard").text)["svc_peruser-v1:overall:n"]) == before + 1


def test_users_page_maps_the_tenants_profiles_coloured_by_online_accuracy(dash: Api) -> None:
    client = login(dash)
    page = client.get("/dashboard/users")
    assert page.status_code == 200
    active = dash.engine.store.active_model()
    assert active is not None and active.id == "svc_peruser-v1"
    mine = set(_tenant_users(dash, ""))
    with_profile = [p.user_id for p in dash.engine.store.profiles(active.id) if p.user_id in mine]
    shown = figures(page.text)
    assert shown["map:profiles"] == shown["map:drawn"] == str(len(with_profile))
    assert len(_pngs(page.text)) == 1
    listed = [html.unescape(u) for u in re.findall(r"data-user>([^<]*)</a>", page.text)]
    assert listed == sorted(mine)
    rows = re.findall(
        r"data-user>([^<]*)</a></td><td class=\"num\">(\d+)</td>\s*<td class=\"num\">([^<]*)<",
        page.text,
    )
    for uid, n, acc in rows:
        uid = html.unescape(uid)
        assert int(n) == dash.engine.store.count_comparisons(uid)
        outcomes = [
            o for o in dash.engine.store.online_outcomes(user_id=uid) if o["model_id"] == active.id
        ]
        want = fig(np.mean([o["correct"] for o in outcomes])) if outcomes else "–"
        assert acc.strip() == want
    # by a user attribute: offered in the form, drawn; an unknown attribute falls back with a note
    assert '<option value="age"' in page.text
    by_age = client.get("/dashboard/users", params={"colour": "age"})
    assert by_age.status_code == 200 and '<option value="age" selected' in by_age.text
    assert _pngs(by_age.text) and _pngs(by_age.text) != _pngs(page.text)
    unknown = client.get("/dashboard/users", params={"colour": "<b>nope</b>"})
    assert (
        unknown.status_code == 200
        and "no user attribute &#39;&lt;b&gt;nope&lt;/b&gt;&#39;" in unknown.text
    )


def test_user_page_shows_comparisons_profile_similar_users_and_outcomes(dash: Api) -> None:
    client = login(dash)
    page = client.get("/dashboard/user", params={"id": "u1"})
    assert page.status_code == 200
    store, engine = dash.engine.store, dash.engine
    latest = store.comparisons("u1")[::-1][:25]
    rows = re.findall(r'data-comparison="(\d+)"', page.text)
    assert [int(r) for r in rows] == [c.id for c in latest]
    shown = figures(page.text)
    profile = engine.profile("u1")
    assert shown["profile:source"] == profile.source
    assert shown["profile:n_comparisons"] == str(profile.n_comparisons)
    assert shown["profile:norm"] == f"{np.linalg.norm(profile.vector):.4f}"
    assert shown["user:comparisons"] == str(store.count_comparisons("u1"))
    similar = dash.call("POST", "/v1/similar-users", json={"user_id": "u1", "k": 10}).json()
    listed = [html.unescape(u) for u in re.findall(r"data-similar>([^<]*)</a>", page.text)]
    assert listed == [n["user_id"] for n in similar["neighbours"]] and listed
    outcomes = store.online_outcomes(user_id="u1")
    assert shown["outcomes:svc_peruser-v1:n"] == str(len(outcomes))
    assert shown["outcomes:svc_peruser-v1:accuracy"] == fig(
        np.mean([o["correct"] for o in outcomes])
    )
    unknown = client.get("/dashboard/user", params={"id": "nobody"})
    assert unknown.status_code == 404 and "unknown user" in unknown.text


def test_user_page_pages_through_comparisons(dash: Api) -> None:
    client = login(dash)
    extra = [
        {
            "user_id": "u2",
            "prompt": f"page {i}",
            "chosen": f"long answer {i} here",
            "rejected": f"s{i}",
        }
        for i in range(30)
    ]
    assert (
        dash.call("POST", "/v1/comparisons/batch", json={"comparisons": extra}).status_code == 201
    )
    everything = [c.id for c in dash.engine.store.comparisons("u2")[::-1]]
    first = client.get("/dashboard/user", params={"id": "u2"}).text
    second = client.get("/dashboard/user", params={"id": "u2", "page": 1}).text
    assert 'id="older"' in first
    ids = [int(x) for x in re.findall(r'data-comparison="(\d+)"', first + second)]
    assert ids == everything[:50]


def test_try_it_ranks_like_the_engine_and_stores_nothing(dash: Api) -> None:
    client = login(dash)
    engine = dash.engine
    prompt = "question 3"
    candidates = [
        "short 3",
        "a long and detailed answer about topic 3 with many careful words",
        "medium answer 3 words",
    ]

    def counts() -> dict[str, int]:
        return dict(engine.store.status()["counts"])

    # warm: the texts are in the feature cache (as after the same POST /v1/rank), nothing changes
    body = {"user_id": "u1", "prompt": prompt, "candidates": candidates}
    api_ranking = dash.call("POST", "/v1/rank", json=body).json()["ranking"]
    before = counts()
    r = client.post(
        "/dashboard/user/rank",
        data={"id": "u1", "prompt": prompt, "candidates": "\n".join(candidates)},
    )
    assert r.status_code == 200
    assert counts() == before
    shown = [
        html.unescape(t)
        for t in re.findall(r"<td class=\"text\" data-candidate>([^<]*)</td>", r.text)
    ]
    scores = re.findall(r"<td class=\"num\" data-score>([^<]*)</td>", r.text)
    ranked = engine.rank("u1", prompt, candidates)
    assert shown == [t for t, _ in ranked] == [x["candidate"] for x in api_ranking]
    assert scores == [f"{s:.4f}" for _, s in ranked]
    assert shown[0] == "short 3"  # u1 (odd) prefers short answers
    # cold texts: only the feature cache grows, as /v1/rank would make it
    before = counts()
    fresh = ["never seen one", "never seen two, a longer text than the first one"]
    r = client.post(
        "/dashboard/user/rank",
        data={"id": "u1", "prompt": "new prompt", "candidates": "\n".join(fresh)},
    )
    assert r.status_code == 200 and len(re.findall(r"data-rank=", r.text)) == 2
    after = counts()
    assert {k: v for k, v in after.items() if k != "features"} == {
        k: v for k, v in before.items() if k != "features"
    }


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        ({"id": "u1", "prompt": "p", "candidates": " \n "}, 422, "candidates"),
        (
            {"id": "u1", "prompt": "p", "candidates": "\n".join(f"c{i}" for i in range(300))},
            422,
            "the most is",
        ),
        ({"id": "nobody", "prompt": "p", "candidates": "a\nb"}, 404, "unknown user"),
        ({"id": "u1", "prompt": "p", "candidates": "a\x00b"}, 422, "NUL"),
    ],
)
def test_try_it_refuses_bad_input_on_the_page(
    dash: Api, form: dict[str, Any], status: int, message: str
) -> None:
    client = login(dash)
    before = dash.engine.store.status()["counts"]
    r = client.post("/dashboard/user/rank", data=form)
    assert r.status_code == status and message in html.unescape(r.text)
    assert dash.engine.store.status()["counts"] == before
    r = client.post(
        "/dashboard/user/rank",
        content=b'{"id": "u1"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 415


# -- tenants and escaping ---------------------------------------------------------------------
def _all_pages(client: TestClient, user: str) -> list[str]:
    pages = [client.get(p) for p in ("/dashboard", "/dashboard/users")]
    pages.append(client.get("/dashboard/user", params={"id": user}))
    pages.append(
        client.post("/dashboard/user/rank", data={"id": user, "prompt": "q", "candidates": "x\ny"})
    )
    assert all(p.status_code == 200 for p in pages), [p.status_code for p in pages]
    return [without_images(p.text) for p in pages]


def test_a_tenant_never_sees_another_tenants_users(dash: Api) -> None:
    shop, default = login(dash, "shop"), login(dash)
    shop_pages = _all_pages(shop, "shopper-1")
    default_pages = _all_pages(default, "u1")
    for page in shop_pages:
        assert DEFAULT_ONLY not in page and "u1" not in page and "alert" not in page
    for page in default_pages:
        assert SHOP_ONLY not in page and "shopper" not in page
    overview = figures(shop.get("/dashboard").text)
    report = dash.call("GET", "/v1/metrics/online", tenant="shop").json()
    assert {
        k: overview.get(k) for k in expected_summary_figures(report["models"][0])
    } == expected_summary_figures(report["models"][0])
    shop_users = [_api_id("shop", u) for u in _tenant_users(dash, "shop")]
    assert overview["counts:users"] == str(len(shop_users))
    users_page = shop.get("/dashboard/users").text
    assert [html.unescape(u) for u in re.findall(r"data-user>([^<]*)</a>", users_page)] == sorted(
        shop_users
    )
    assert figures(users_page)["map:profiles"] == str(len(shop_users))
    # a default-tenant user is unknown to the shop, and the other way round
    assert shop.get("/dashboard/user", params={"id": "u1"}).status_code == 404
    assert default.get("/dashboard/user", params={"id": SHOP_ONLY}).status_code == 404
    r = shop.post("/dashboard/user/rank", data={"id": "u1", "prompt": "q", "candidates": "a\nb"})
    assert r.status_code == 404 and "data-rank" not in r.text
    similar = re.findall(
        r"data-similar>([^<]*)</a>", shop.get("/dashboard/user", params={"id": "shopper-1"}).text
    )
    assert similar and set(similar) <= set(shop_users)


def test_html_in_user_ids_attributes_and_texts_is_escaped(dash: Api) -> None:
    client = login(dash)
    pages = [
        client.get("/dashboard/users").text,
        client.get("/dashboard/users", params={"colour": "note"}).text,
        client.get("/dashboard/user", params={"id": SCRIPT_USER}).text,
        client.post(
            "/dashboard/user/rank",
            data={"id": SCRIPT_USER, "prompt": "<b>q</b>", "candidates": f"{SCRIPT_TEXT}\nplain"},
        ).text,
    ]
    for page in pages:
        assert "<script" not in page.lower() and "<img src=x" not in page
    user_page, ranked = pages[2], pages[3]
    assert escape(SCRIPT_USER) in pages[0]  # listed, escaped
    assert f'<span id="user-id">{escape(SCRIPT_USER)}</span>' in user_page
    assert escape(SCRIPT_TEXT) in user_page and "&lt;b&gt;q0&lt;/b&gt;" in user_page
    assert "&lt;i&gt;html&lt;/i&gt;" in user_page  # an attribute value
    assert f'<td class="text" data-candidate>{escape(SCRIPT_TEXT)}</td>' in ranked
    # links carry the id url-encoded
    assert "/dashboard/user?id=%3Cscript%3Ealert%28%22id%22%29%3C%2Fscript%3E" in pages[0]


def test_pages_render_on_an_empty_store(api: Api) -> None:
    client = login(api)
    overview = client.get("/dashboard")
    assert overview.status_code == 200 and "No model trained yet" in overview.text
    assert 'id="no-outcomes"' in overview.text and figures(overview.text)["counts:users"] == "0"
    users = client.get("/dashboard/users")
    assert users.status_code == 200 and "No users yet" in users.text
    assert (
        api.call(
            "POST",
            "/v1/comparisons",
            json={"user_id": "a", "prompt": "p", "chosen": "x", "rejected": "y"},
        ).status_code
        == 201
    )
    user = client.get("/dashboard/user", params={"id": "a"})
    assert user.status_code == 200 and "data-comparison=" in user.text
    r = client.post("/dashboard/user/rank", data={"id": "a", "prompt": "p", "candidates": "x\ny"})
    assert r.status_code == 404 and "no trained model" in r.text


def test_without_auth_the_dashboard_opens_on_the_default_tenant(tmp_path: Path) -> None:
    with open_api(make_engine(tmp_path / "home"), auth=False) as api:
        client = TestClient(api.client.app, follow_redirects=False)
        assert client.get("/dashboard/login").headers["location"] == "/dashboard"
        page = client.get("/dashboard")
        assert page.status_code == 200 and "default tenant" in page.text


# -- the cache and the map's arithmetic -----------------------------------------------------------------------
def test_page_cache_recomputes_on_new_marks_after_the_refresh_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("persona_engine.service.dashboard_cache.time.monotonic", lambda: clock[0])
    cache = PageCache(max_entries=2, refresh_s=10.0, ttl_s=60.0, background=False)
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    assert cache.get("a", (1,), compute) == 1
    assert cache.get("a", (1,), compute) == 1  # same marks: kept
    clock[0] += 5
    assert cache.get("a", (2,), compute) == 1  # new marks, within the refresh interval: kept
    clock[0] += 6
    assert cache.get("a", (2,), compute) == 2  # new marks, older than refresh_s: recomputed
    clock[0] += 61
    assert cache.get("a", (2,), compute) == 3  # same marks, older than ttl_s: recomputed
    cache.get("b", (2,), compute), cache.get("c", (2,), compute)
    assert cache.get("a", (2,), compute) == 6  # evicted (two entries at most)


def test_page_cache_serves_a_stale_entry_while_one_thread_recomputes_it() -> None:
    cache = PageCache(refresh_s=0.0)
    release = threading.Event()
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        if len(calls) > 1:
            assert release.wait(10)
        return len(calls)

    assert cache.get("a", (1,), compute) == 1
    assert [cache.get("a", (2,), compute) for _ in range(5)] == [1] * 5  # stale, at once
    release.set()
    cache.settle()
    assert cache.get("a", (2,), compute) == 2 and len(calls) == 2  # one recomputation
    assert (cache.hits, cache.stale, cache.misses) == (1, 5, 2)


def test_pca_projects_on_the_leading_directions_with_fixed_signs() -> None:
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 4.0, 0.0]) / 5.0
    points = np.outer(rng.standard_normal(500) * 10.0, direction) + 0.1 * rng.standard_normal(
        (500, 3)
    )
    xy, (first, second) = pca_2d(points.astype(np.float32))
    assert first > 0.99 and second < 0.01
    centred = points - points.mean(axis=0)
    assert np.allclose(np.abs(xy[:, 0]), np.abs(centred @ direction), atol=0.5)
    assert np.allclose(pca_2d(-points)[0], -xy, atol=1e-4)  # same axes whatever the data's sign
    assert np.corrcoef(xy[:, 0], centred @ direction)[0, 1] > 0.99  # the larger loading is positive
    assert pca_2d(np.zeros((0, 4)))[0].shape == (0, 2)


def test_the_map_draws_a_capped_sample_of_every_profile(dash: Api) -> None:
    reader = dash.client.app.state.service.reader
    full = profile_map(reader, "", "svc_peruser-v1")
    capped = profile_map(reader, "", "svc_peruser-v1", max_points=3)
    assert capped.n_profiles == full.n_profiles > 3 and len(capped.user_ids) == 3
    assert set(capped.user_ids) <= set(full.user_ids) and capped.accuracy == full.accuracy
    assert all("\x1f" not in u for u in full.user_ids)  # the default tenant's ids are unprefixed
    shop = profile_map(reader, "shop", "svc_peruser-v1")
    assert shop.user_ids and all(u.startswith("shop\x1f") for u in shop.user_ids)
