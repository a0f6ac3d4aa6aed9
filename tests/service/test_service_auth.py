"""API keys (hashed, revocable, required everywhere but /health) and tenant isolation."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from click.testing import CliRunner
from service_support import Api

from persona_engine.cli import cli
from persona_engine.service.auth import KeyRing, hash_key
from persona_engine.store import Store

COMP = {"prompt": "q", "chosen": "short one", "rejected": "a long and detailed answer"}


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/status"),
        ("GET", "/v1/models"),
        ("POST", "/v1/score"),
        ("POST", "/v1/comparisons"),
        ("DELETE", "/v1/users/u0"),
        ("GET", "/v1/profiles/u0"),
        ("POST", "/v1/train"),
    ],
)
def test_every_endpoint_but_health_needs_a_valid_key(api: Api, method: str, path: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"X-API-Key": "pe_00000000_" + "x" * 43},
        {"Authorization": "Basic abc"},
    ):
        r = api.client.request(method, path, headers=headers, json={})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (
            headers,
            r.text,
        )
    assert api.client.get("/health").status_code == 200
    assert api.client.get("/v1/status", headers={"X-API-Key": api.keys[""]}).status_code == 200


def test_keys_are_stored_hashed_and_revocation_takes_effect(api: Api) -> None:
    ring: KeyRing = api.client.app.state.service.keys
    key_id, key = ring.create(name="temp")
    rows = api.engine.store.db.execute("SELECT hash FROM api_keys WHERE id=?", [key_id]).fetchall()
    assert rows[0][0] == hash_key(key) and key not in str(
        list(api.engine.store.db["api_keys"].rows)
    )
    assert api.client.get("/v1/status", headers={"X-API-Key": key}).status_code == 200
    ring.revoke(key_id)
    r = api.client.get("/v1/status", headers={"X-API-Key": key})
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_keys_cli_create_list_revoke(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PERSONA_ENGINE_HOME", str(tmp_path))
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "--tenant", "shop", "--name", "web"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    ring = KeyRing(Store(tmp_path / "persona.db"))
    assert ring.verify(key).tenant == "shop"
    listed = runner.invoke(cli, ["keys", "list"])
    assert '"tenant": "shop"' in listed.stdout and key not in listed.stdout
    key_id = key.split("_")[1]
    assert runner.invoke(cli, ["keys", "revoke", key_id]).exit_code == 0
    assert runner.invoke(cli, ["keys", "revoke", key_id]).exit_code == 1
    assert runner.invoke(cli, ["keys", "create", "--tenant", "bad tenant!"]).exit_code == 1


def test_a_tenant_cannot_read_write_or_delete_another_tenants_user(trained_api: Api) -> None:
    api = trained_api
    assert (
        api.call(
            "POST", "/v1/onboard", tenant="shop", json={"user_id": "alice", "comparisons": [COMP]}
        ).status_code
        == 200
    )
    before = api.counts()
    # the default tenant (and its 'u0' users) and 'shop' (and its 'alice') do not see each other
    for tenant, user in (("", "alice"), ("shop", "u0")):
        for method, path, body in (
            ("GET", f"/v1/profiles/{user}", None),
            ("GET", f"/v1/users/{user}", None),
            ("DELETE", f"/v1/users/{user}", None),
            ("DELETE", f"/v1/profiles/{user}", None),
            ("POST", "/v1/score", {"user_id": user, "candidates": ["x"]}),
            ("POST", "/v1/rank", {"user_id": user, "candidates": ["x"]}),
            ("POST", "/v1/onboard", {"user_id": user}),
            ("POST", "/v1/generate", {"user_id": user, "prompt": "hi"}),
            ("POST", "/v1/similar-users", {"user_id": user}),
            ("POST", "/v1/next-queries", {"user_id": user, "candidates": ["a b", "c d"]}),
        ):
            r = api.call(method, path, tenant=tenant, json=body)
            assert r.status_code == 404, (tenant, method, path, r.text)
            assert r.json()["error"] == {
                "code": "unknown_user",
                "message": f"unknown user {user!r}",
            }
    assert api.counts() == before
    # the stored id never leaks the other tenant's name, and the same id can exist in both tenants
    assert (
        api.call("POST", "/v1/comparisons", json={"user_id": "alice", **COMP}).json()["added"] == 1
    )
    assert api.call("GET", "/v1/users/alice").json()["n_comparisons"] == 1
    assert api.call("DELETE", "/v1/users/alice").status_code == 200
    assert api.call("GET", "/v1/users/alice", tenant="shop").json()["n_comparisons"] == 1
    assert api.call("GET", "/v1/status", tenant="shop").json()["users"] == 1
    assert api.call("GET", "/v1/status", tenant="shop").json()["counts"] == {}


def test_tenant_keys_cannot_train_the_shared_model(trained_api: Api) -> None:
    r = trained_api.call("POST", "/v1/train", tenant="shop", json={"backend": "bt"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_a_default_key_cannot_spell_a_tenants_stored_id(trained_api: Api) -> None:
    trained_api.call("POST", "/v1/comparisons", tenant="shop", json={"user_id": "bob", **COMP})
    for spelled in ("shop\x1fbob", "shop%1Fbob"):
        r = trained_api.call(
            "GET", "/v1/users/" + (quote(spelled, safe="") if "\x1f" in spelled else spelled)
        )
        assert r.status_code in (404, 422)
    r = trained_api.call("POST", "/v1/comparisons", json={"user_id": "shop\x1fbob", **COMP})
    assert r.status_code == 422


def test_similar_users_only_returns_the_callers_tenant(trained_api: Api) -> None:
    """The real profile index holds every tenant's profiles; the service filters by tenant."""
    api = trained_api
    for user in ("carol", "dave"):
        r = api.call(
            "POST", "/v1/onboard", tenant="shop", json={"user_id": user, "comparisons": [COMP]}
        )
        assert r.status_code == 200, r.text
    # unfiltered, the index answers with users of both tenants: the filter below is what hides them
    nearest_to_carol = {n.user_id for n in api.engine.similar_users("shop\x1fcarol", k=50)}
    assert {"u0", "u1", "shop\x1fdave"} <= nearest_to_carol
    nearest_to_u0 = {n.user_id for n in api.engine.similar_users("u0", k=50)}
    assert "shop\x1fcarol" in nearest_to_u0
    mine = api.call("POST", "/v1/similar-users", json={"user_id": "u0", "k": 50}).json()[
        "neighbours"
    ]
    assert {n["user_id"] for n in mine} == {f"u{i}" for i in range(1, 6)}
    theirs = api.call(
        "POST", "/v1/similar-users", tenant="shop", json={"user_id": "carol", "k": 5}
    ).json()
    assert [n["user_id"] for n in theirs["neighbours"]] == ["dave"]


def test_serve_refuses_no_auth_beyond_loopback() -> None:
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--no-auth"])
    assert result.exit_code == 1 and "loopback" in result.output
