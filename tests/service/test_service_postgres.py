"""The service on PostgreSQL: keys, tenants, recording, training, scoring and similar users; model
files any replica can load; and two replicas on one database (index changes pushed by
LISTEN/NOTIFY, one training job at a time)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from service_support import BT_FAST, Api, make_engine, open_api, population

from persona_engine.service.auth import KeyRing
from persona_engine.store.postgres import PostgresStore

LONG, SHORT = "a long and detailed answer about topic 9 with many careful words", "short 9"


def wait_for_job(api: Api, job_id: str, timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while (job := api.call("GET", f"/v1/train/{job_id}").json())["state"] == "running":
        assert time.time() < deadline, job
        time.sleep(0.1)
    return dict(job)


@pytest.fixture
def trained_url(postgres_url: str, tmp_path: Path) -> str:
    """A PostgreSQL store with the population recorded and svc_peruser-v1 trained (in home "a")."""
    engine = make_engine(tmp_path / "a", postgres_url)
    engine.record(population())
    engine.train("svc_peruser")
    engine.store.close()
    return postgres_url


@pytest.fixture
def replicas(trained_url: str, tmp_path: Path) -> Iterator[tuple[Api, Api]]:
    """Two service instances (own homes, own engines) on one database."""
    with ExitStack() as stack:
        apis = []
        for name in ("replica_a", "replica_b"):
            engine = make_engine(tmp_path / name, trained_url)
            stack.callback(engine.store.close)
            apis.append(stack.enter_context(open_api(engine)))
        yield apis[0], apis[1]


def test_keys_tenants_record_train_score_and_similar_users(postgres_url: str, tmp_path) -> None:
    engine = make_engine(tmp_path / "home", postgres_url)
    with open_api(engine) as api:
        # the keys live in the database: another process (here another store) verifies them
        other = PostgresStore(postgres_url)
        try:
            assert KeyRing(other).verify(api.keys["shop"]).tenant == "shop"
            assert {k["tenant"] for k in KeyRing(other).list()} == {"", "shop"}
        finally:
            other.close()
        r = api.call("POST", "/v1/comparisons/batch", json={"comparisons": population()})
        assert r.status_code == 201 and r.json()["added"] == 48
        alice = {"user_id": "alice", "prompt": "q", "chosen": SHORT, "rejected": LONG}
        assert api.call("POST", "/v1/comparisons", tenant="shop", json=alice).status_code == 201
        assert api.call("GET", "/v1/users/alice", tenant="shop").json()["n_comparisons"] == 1
        assert api.call("GET", "/v1/users/alice").status_code == 404  # another tenant's user
        assert api.call("GET", "/v1/status", tenant="shop").json()["users"] == 1

        # training runs in a subprocess that opens the same database from the URL
        job = api.call("POST", "/v1/train", json={"backend": "bt", "config": BT_FAST}).json()
        assert wait_for_job(api, job["id"])["state"] == "succeeded"
        r = api.call("POST", "/v1/score", json={"user_id": "u0", "candidates": [LONG, SHORT]})
        assert r.status_code == 200 and r.json()["model_id"] == "bt-v1", r.text

        engine.train("svc_peruser")  # personalized, for similar users
        s0, s1 = (
            api.call("POST", "/v1/score", json={"user_id": u, "candidates": [LONG, SHORT]}).json()
            for u in ("u0", "u1")
        )
        assert s0["model_id"] == "svc_peruser-v1" and s0["profile_source"] == "fitted"
        assert s0["scores"][0] > s0["scores"][1] and s1["scores"][0] < s1["scores"][1]
        r = api.call("POST", "/v1/similar-users", json={"user_id": "u0", "k": 2})
        assert r.status_code == 200, r.text
        assert sorted(n["user_id"] for n in r.json()["neighbours"]) == ["u2", "u4"]
        assert api.call("GET", "/metrics").status_code == 200
        assert api.client.get("/health").json()["status"] == "ok"


def test_a_model_trained_in_one_home_loads_in_another(trained_url: str, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "a" / "models")  # the training machine's copy is gone
    engine = make_engine(tmp_path / "b", trained_url)
    try:
        long_first = engine.score("u0", "question 9", [LONG, SHORT])
        assert long_first[0] > long_first[1]
        local = list((tmp_path / "b" / "models" / ".store").iterdir())
        assert [p.name.rsplit("-", 1)[0] for p in local] == ["svc_peruser-v1"]
        assert "u4" in json.loads((local[0] / "config.json").read_text())["users"]

        # deleting a user rewrites the stored files: a third machine never sees the user
        assert engine.delete_user("u4")["model_files"] == 1
        third = make_engine(tmp_path / "c", trained_url)
        try:
            rec, backend = third.load_model()
            assert "u4" not in backend.users and "u2" in backend.users
            saved = next((tmp_path / "c" / "models" / ".store").iterdir())
            assert "u4" not in json.loads((saved / "config.json").read_text())["users"]
        finally:
            third.store.close()
        assert [p.name for p in (tmp_path / "b" / "models" / ".store").iterdir()] != [
            local[0].name
        ]  # b's copy with u4 in it was replaced
    finally:
        engine.store.close()


def test_a_user_written_through_one_replica_reaches_the_other_within_a_second(
    replicas: tuple[Api, Api],
) -> None:
    a, b = replicas
    r = b.call("POST", "/v1/similar-users", json={"user_id": "u0", "k": 3})
    assert r.status_code == 200  # b's index of svc_peruser-v1 is loaded
    index = b.engine._indexes.loaded()["svc_peruser-v1"]
    comps = [{"prompt": "q", "chosen": f"short {i}", "rejected": f"{LONG} {i}"} for i in range(4)]
    r = a.call("POST", "/v1/onboard", json={"user_id": "newbie", "comparisons": comps})
    assert r.status_code == 200, r.text
    written = time.perf_counter()
    # no request reaches b: the notification alone brings the new profile into b's index
    while "newbie" not in index:
        assert time.perf_counter() - written < 1.0, "replica b did not learn of the new user"
        time.sleep(0.01)
    r = b.call("POST", "/v1/similar-users", json={"user_id": "newbie", "k": 2})
    assert r.status_code == 200 and len(r.json()["neighbours"]) == 2
    near = b.call("POST", "/v1/similar-users", json={"user_id": "u1", "k": 6}).json()
    assert "newbie" in [n["user_id"] for n in near["neighbours"]]


def test_one_training_job_at_a_time_across_replicas(replicas: tuple[Api, Api]) -> None:
    a, b = replicas
    job = a.call("POST", "/v1/train", json={"backend": "bt", "config": BT_FAST})
    assert job.status_code == 202
    r = b.call("POST", "/v1/train", json={"backend": "bt", "config": BT_FAST})
    assert r.status_code == 409 and "another replica" in r.json()["error"]["message"]
    assert wait_for_job(a, job.json()["id"])["state"] == "succeeded"
    again = b.call("POST", "/v1/train", json={"backend": "bt", "config": BT_FAST})
    assert again.status_code == 202  # the lock went with a's job
    assert wait_for_job(b, again.json()["id"])["model_id"] == "bt-v2"
    r = a.call(
        "POST", "/v1/score", json={"user_id": "u0", "candidates": [LONG, SHORT], "model": "bt"}
    )
    assert r.json()["model_id"] == "bt-v2"  # a loads the version b trained


def test_the_database_going_away_is_a_503_and_the_service_recovers(tmp_path: Path) -> None:
    """A server of its own (stopped and started here): while the database is down, writes and
    reads answer 503 with a clear message; nothing acknowledged before is lost, and the service
    answers again once the database is back, without a restart."""
    from persona_engine.testing.postgres import throwaway_postgres

    with throwaway_postgres(durable=True) as server:  # what was acknowledged must survive the stop
        url = server.create_database("outage")
        engine = make_engine(tmp_path / "home", url)
        engine.record(population())
        engine.train("svc_peruser")
        with open_api(engine) as api:
            before = population(n_users=2, per_user=3, prefix="before")
            assert (
                api.call("POST", "/v1/comparisons/batch", json={"comparisons": before}).status_code
                == 201
            )
            server.stop()
            down = api.call("POST", "/v1/comparisons", json=population(1, 1, prefix="down")[0])
            assert down.status_code == 503, down.text
            assert "database" in down.json()["error"]["message"].lower()
            score = api.call(
                "POST",
                "/v1/score",
                json={"user_id": "u0", "prompt": "question 1", "candidates": [LONG, SHORT]},
            )
            assert score.status_code == 503, score.text
            server.start()
            deadline = time.time() + 30
            while (
                again := api.call(
                    "POST", "/v1/comparisons", json=population(1, 1, prefix="after")[0]
                )
            ).status_code == 503:
                assert time.time() < deadline, again.text
                time.sleep(0.5)
            assert again.status_code == 201, again.text
            users = {c["user_id"] for c in before}
            stored = {c.user_id for c in engine.store.comparisons(users=sorted(users))}
            assert stored == users and engine.store.count_comparisons() == 48 + 6 + 1
        engine.store.close()
