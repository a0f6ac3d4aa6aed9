"""The scoring, onboarding and similar-users routes on the shipped personalized backends (``hier``,
``lore``), trained on the tiny text population whose even users like long answers and odd users
short ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from service_support import Api, make_engine, open_api, population

#: options that fit the six users in well under a second
SHIPPED = {
    "hier": {"max_iter": 10},
    "lore": {"rank": 2, "training": {"lr": 0.5, "batch_size": 64, "epochs": 80, "seed": 0}},
}
LONG = "a long and detailed answer about topic 9 with many careful words"
SHORT = "short 9"


@pytest.fixture(params=list(SHIPPED))
def shipped_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    engine = make_engine(tmp_path / "home")
    engine.record(population())
    engine.train(request.param, SHIPPED[request.param])
    with open_api(engine) as api:
        yield api


def _scores(api: Api, user: str) -> dict:
    body = {"user_id": user, "prompt": "question 9", "candidates": [LONG, SHORT]}
    r = api.call("POST", "/v1/score", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _ranking(api: Api, user: str) -> list[int]:
    r = api.call("POST", "/v1/rank", json={"user_id": user, "candidates": [LONG, SHORT]})
    assert r.status_code == 200, r.text
    return [item["index"] for item in r.json()["ranking"]]


def _onboard(api: Api, user: str, likes: str) -> dict:
    long = [f"a long and detailed answer number {i} with words" for i in range(4)]
    short = [f"short {i}" for i in range(4)]
    chosen, rejected = (long, short) if likes == "long" else (short, long)
    comps = [{"prompt": "q", "chosen": c, "rejected": r} for c, r in zip(chosen, rejected)]
    r = api.call("POST", "/v1/onboard", json={"user_id": user, "comparisons": comps})
    assert r.status_code == 200, r.text
    return r.json()


def _neighbours(api: Api, user: str, k: int) -> set[str]:
    r = api.call("POST", "/v1/similar-users", json={"user_id": user, "k": k})
    assert r.status_code == 200, r.text
    return {n["user_id"] for n in r.json()["neighbours"]}


def test_users_with_opposite_tastes_get_opposite_rankings(shipped_api: Api) -> None:
    model_id = shipped_api.engine.model_record().id
    s0, s1 = _scores(shipped_api, "u0"), _scores(shipped_api, "u1")
    assert s0["model_id"] == model_id and s0["profile_source"] == "fitted"
    assert s0["scores"][0] > s0["scores"][1] and s1["scores"][0] < s1["scores"][1]
    assert _ranking(shipped_api, "u0") == [0, 1] and _ranking(shipped_api, "u1") == [1, 0]


def test_onboarded_users_are_ranked_by_their_own_answers(shipped_api: Api) -> None:
    model_id = shipped_api.engine.model_record().id
    for user, likes, ranking in (
        ("fan-of-long", "long", [0, 1]),
        ("fan-of-short", "short", [1, 0]),
    ):
        prof = _onboard(shipped_api, user, likes)
        assert prof["source"] == "onboarded" and prof["model_id"] == model_id
        scored = _scores(shipped_api, user)
        assert scored["profile_source"] == "onboarded"
        assert _ranking(shipped_api, user) == ranking


def test_similar_users_share_the_taste(shipped_api: Api) -> None:
    assert _neighbours(shipped_api, "u0", 2) == {"u2", "u4"}
    assert _neighbours(shipped_api, "u1", 2) == {"u3", "u5"}
    _onboard(shipped_api, "fan-of-short", "short")
    assert _neighbours(shipped_api, "fan-of-short", 3) == {"u1", "u3", "u5"}
