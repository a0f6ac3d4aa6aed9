"""The endpoints do what they say, with the models the engine trained."""

from __future__ import annotations

from service_support import Api, population


def test_health_needs_no_key_and_the_schema_lists_every_endpoint(api: Api) -> None:
    assert api.client.get("/health").json()["status"] == "ok"
    paths = api.client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/comparisons",
        "/v1/comparisons/batch",
        "/v1/onboard",
        "/v1/profiles/{user_id}",
        "/v1/users/{user_id}",
        "/v1/score",
        "/v1/rank",
        "/v1/similar-users",
        "/v1/next-queries",
        "/v1/generate",
        "/v1/models",
        "/v1/status",
        "/v1/train",
        "/v1/train/{job_id}",
    ):
        assert path in paths, path


def test_record_single_and_batch_is_idempotent(api: Api) -> None:
    comps = population(2, 3)
    r = api.call("POST", "/v1/comparisons", json=comps[0])
    assert r.status_code == 201 and r.json() == {"added": 1, "duplicates": 0, "profiles": None}
    r = api.call("POST", "/v1/comparisons/batch", json={"comparisons": comps})
    assert r.json() == {"added": 5, "duplicates": 1, "profiles": None}
    assert api.engine.store.count_comparisons() == 6
    r = api.call("GET", "/v1/users/u1")
    assert r.status_code == 200 and r.json()["n_comparisons"] == 3


def test_score_rank_and_model_status(trained_api: Api) -> None:
    long, short = "a long and detailed answer about topic 9 with many careful words", "short 9"
    s0 = trained_api.call(
        "POST",
        "/v1/score",
        json={"user_id": "u0", "prompt": "question 9", "candidates": [long, short]},
    ).json()
    s1 = trained_api.call(
        "POST",
        "/v1/score",
        json={"user_id": "u1", "prompt": "question 9", "candidates": [long, short]},
    ).json()
    assert s0["model_id"] == "svc_peruser-v1" and s0["profile_source"] == "fitted"
    assert s0["scores"][0] > s0["scores"][1] and s1["scores"][0] < s1["scores"][1]  # personalized
    ranked = trained_api.call(
        "POST", "/v1/rank", json={"user_id": "u1", "candidates": [long, short]}
    ).json()
    assert [r["index"] for r in ranked["ranking"]] == [1, 0]
    bt = trained_api.call(
        "POST", "/v1/score", json={"user_id": "u1", "candidates": [long, short], "model": "bt"}
    ).json()
    assert bt["model_id"] == "bt-v1"
    prior = trained_api.call("POST", "/v1/score", json={"candidates": [long, short]}).json()
    assert prior["profile_source"] == "prior" and prior["user_id"] is None
    models = trained_api.call("GET", "/v1/models").json()
    assert {m["id"]: m["active"] for m in models} == {"bt-v1": True, "svc_peruser-v1": True}
    status = trained_api.call("GET", "/v1/status").json()
    assert (
        status["active_model"]["id"] == "svc_peruser-v1" and status["counts"]["comparisons"] == 48
    )


def test_onboard_get_and_delete_profile_then_user(trained_api: Api) -> None:
    comps = [
        {
            "prompt": "q",
            "chosen": f"short {i}",
            "rejected": f"a long and detailed answer number {i} with words",
        }
        for i in range(4)
    ]
    r = trained_api.call("POST", "/v1/onboard", json={"user_id": "newbie", "comparisons": comps})
    assert r.status_code == 200, r.text
    prof = r.json()
    assert (
        prof["source"] == "onboarded" and prof["n_comparisons"] == 4 and len(prof["vector"]) == 34
    )
    assert trained_api.call("GET", "/v1/profiles/newbie").json()["vector"] == prof["vector"]
    scores = trained_api.call(
        "POST",
        "/v1/score",
        json={"user_id": "newbie", "candidates": ["a long and detailed answer", "short"]},
    ).json()
    assert scores["profile_source"] == "onboarded" and scores["scores"][1] > scores["scores"][0]
    assert trained_api.call("DELETE", "/v1/profiles/newbie").json()["deleted"] == {"profiles": 1}
    assert trained_api.call("GET", "/v1/profiles/newbie").status_code == 404
    r = trained_api.call("DELETE", "/v1/users/newbie")
    assert r.status_code == 200 and r.json()["deleted"]["comparisons"] == 4
    assert trained_api.call("GET", "/v1/users/newbie").json()["error"]["code"] == "unknown_user"
    assert not trained_api.engine.store.has_user("newbie")


def test_user_ids_with_slashes_and_unicode_work_in_paths(trained_api: Api) -> None:
    uid = "team/ünï code?#1"
    comp = {
        "user_id": uid,
        "prompt": "q",
        "chosen": "short one",
        "rejected": "a long and detailed answer",
    }
    assert (
        trained_api.call(
            "POST", "/v1/onboard", json={"user_id": uid, "comparisons": [comp]}
        ).status_code
        == 200
    )
    from urllib.parse import quote

    r = trained_api.call("GET", "/v1/profiles/" + quote(uid, safe=""))
    assert r.status_code == 200 and r.json()["user_id"] == uid


def test_score_with_an_explicit_vector(trained_api: Api) -> None:
    prof = trained_api.call("GET", "/v1/profiles/u1").json()
    body = {"candidates": ["a long and detailed answer", "short"], "vector": prof["vector"]}
    by_vector = trained_api.call("POST", "/v1/score", json=body).json()
    by_user = trained_api.call(
        "POST", "/v1/score", json={"user_id": "u1", "candidates": body["candidates"]}
    ).json()
    assert by_vector["profile_source"] == "vector" and by_vector["scores"] == by_user["scores"]


def test_similar_users_and_next_queries(trained_api: Api) -> None:
    r = trained_api.call("POST", "/v1/similar-users", json={"user_id": "u0", "k": 2})
    assert r.status_code == 200, r.text
    near = [n["user_id"] for n in r.json()["neighbours"]]
    assert near == ["u2", "u4"] or near == ["u4", "u2"]  # the users who share u0's taste
    cands = [
        "a long and detailed answer about cats",
        "short cats",
        "a long and detailed answer about dogs",
        "short dogs",
    ]
    r = trained_api.call(
        "POST", "/v1/next-queries", json={"user_id": "u0", "candidates": cands, "n": 2}
    )
    assert r.status_code == 200, r.text
    queries = r.json()["queries"]
    assert len(queries) == 2 and all(
        q["a"] in cands and q["b"] in cands and q["a"] != q["b"] for q in queries
    )
    r = trained_api.call(
        "POST", "/v1/next-queries", json={"user_id": "u0", "pairs": [[cands[0], cands[1]]], "n": 1}
    )
    assert r.status_code == 200 and len(r.json()["queries"]) == 1
    bad = trained_api.call("POST", "/v1/next-queries", json={"user_id": "u0", "n": 1})
    assert bad.status_code == 422


def test_generate_unknown_generator_is_a_404(trained_api: Api) -> None:
    r = trained_api.call(
        "POST",
        "/v1/generate",
        json={"user_id": "u0", "prompt": "hi", "generator": "no-such-generator"},
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_plugin"


def test_generate_through_a_generator_plugin(trained_api: Api) -> None:
    import base64

    drafts = ["short 7", "a long and detailed answer about topic 7 with many careful words"]
    body = {
        "prompt": "question 7",
        "generator": "svc_rank_echo",
        "options": {"drafts": drafts, "image": True},
    }
    for user, best in (("u0", drafts[1]), ("u1", drafts[0])):
        r = trained_api.call("POST", "/v1/generate", json={**body, "user_id": user})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["texts"] == [best] and out["info"]["profile"] is True
        assert base64.b64decode(out["images"][0]).startswith(b"\x89PNG")


def test_record_with_profile_update(trained_api: Api) -> None:
    comps = [
        {
            "user_id": "fresh",
            "prompt": "q",
            "chosen": f"short {i}",
            "rejected": f"a long and detailed answer {i}",
        }
        for i in range(3)
    ]
    r = trained_api.call(
        "POST",
        "/v1/comparisons/batch",
        params={"update_profile": "true"},
        json={"comparisons": comps},
    )
    assert r.status_code == 201, r.text
    assert r.json()["profiles"]["onboarded"] == 1
    prof = trained_api.call("GET", "/v1/profiles/fresh").json()
    assert prof["n_comparisons"] == 3 and prof["model_id"] == "svc_peruser-v1"
