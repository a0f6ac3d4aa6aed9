"""What only the PostgreSQL store does: its migrator under concurrency, its connection errors, and
the choice of store by URL (``Engine(database=...)``, ``PERSONA_ENGINE_DATABASE``, ``persona
--database``). The shared behaviour is in test_store_conformance.py."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from click.testing import CliRunner

from persona_engine import Engine
from persona_engine.cli import cli
from persona_engine.errors import InvalidInputError, StoreUnavailableError
from persona_engine.store import Store, open_store
from persona_engine.store.postgres import PostgresStore, redact_url
from persona_engine.store.postgres_schema import MIGRATION_LOCK, MIGRATIONS, apply_migrations

ALL = [name for name, _ in MIGRATIONS]


def test_migrating_twice_is_a_no_op(postgres_url):
    first = PostgresStore(postgres_url)
    second = PostgresStore(postgres_url)
    try:
        assert first.applied == ALL and second.applied == []
        assert second.status()["migrations"] == ALL
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            assert apply_migrations(conn) == []
            n = conn.execute("SELECT count(*) FROM persona_engine_migrations").fetchone()[0]
        assert n == len(ALL)
    finally:
        first.close()
        second.close()


def test_two_migrators_at_once_one_applies_the_other_waits(postgres_url):
    results: dict[str, list[str]] = {}

    def migrate(name: str) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            results[name] = apply_migrations(conn)

    with psycopg.connect(postgres_url) as holder:  # stands in for a migrator that is mid-way
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        threads = [threading.Thread(target=migrate, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        time.sleep(0.5)
        assert results == {}  # both wait for the lock
        holder.rollback()  # the lock goes with the transaction
        for t in threads:
            t.join(10)
    assert sorted(results.values()) == [[], ALL]  # one applied everything, the other nothing


def test_unreachable_server_is_one_clear_error_without_the_password(postgres_server):
    url = "postgresql://bob:s3cret-pw@127.0.0.1:1/shop"
    with pytest.raises(StoreUnavailableError) as caught:
        PostgresStore(url, connect_timeout=2)
    message = str(caught.value)
    assert "'shop'" in message and "127.0.0.1:1" in message and "s3cret-pw" not in message
    assert caught.value.status == 503
    missing = postgres_server.url("no_such_db")
    with pytest.raises(StoreUnavailableError, match="no_such_db.*does not exist"):
        PostgresStore(missing)
    assert redact_url(url) == "postgresql://bob:***@127.0.0.1:1/shop"
    assert "pw" not in redact_url("postgresql://h/db?password=pw&sslmode=require")


def test_store_chosen_by_url_path_env_or_cli(postgres_url, tmp_path, monkeypatch):
    store = open_store(postgres_url)
    assert isinstance(store, PostgresStore)
    store.close()
    assert isinstance(open_store(tmp_path / "x.db"), Store)
    with pytest.raises(InvalidInputError, match="mysql"):
        open_store("mysql://h/db")
    monkeypatch.setenv("PERSONA_ENGINE_DATABASE", postgres_url)
    engine = Engine(tmp_path / "home", encoder="hashing")
    assert isinstance(engine.store, PostgresStore)
    engine.store.close()
    result = CliRunner().invoke(cli, ["db", "status"])
    assert result.exit_code == 0 and '"users": 0' in result.output
    monkeypatch.delenv("PERSONA_ENGINE_DATABASE")
    result = CliRunner().invoke(cli, ["--database", postgres_url, "db", "path"])
    assert result.output.strip() == postgres_url
    bad = CliRunner().invoke(
        cli, ["--database", "postgresql://u:pw9@127.0.0.1:1/x", "db", "status"]
    )
    assert bad.exit_code == 1 and bad.output.startswith("Error: cannot connect to PostgreSQL")
    assert "pw9" not in bad.output and "Traceback" not in bad.output


def test_engine_on_postgres_record_train_onboard_score_similar_delete(postgres_url, tmp_path):
    engine = Engine(tmp_path / "home", database=postgres_url, encoder="hashing")
    try:
        rows = [
            {
                "user_id": f"user{u}",
                "prompt": "reply",
                "chosen": f"{'rude hostile' if u % 2 else 'kind helpful'} {i}",
                "rejected": f"{'kind helpful' if u % 2 else 'rude hostile'} {i}",
            }
            for u in range(6)
            for i in range(12)
        ]
        assert engine.record(rows) == len(rows)
        assert engine.record(rows[:5]) == 0  # idempotent
        rec = engine.train("hier", {"max_iter": 30})
        assert rec.active and engine.store.active_model().id == rec.id
        nice = [{"prompt": "reply", "chosen": "kind clear", "rejected": "rude vague"}] * 2
        profile = engine.onboard("newcomer", nice)
        assert profile.model_id == rec.id and engine.store.profile("newcomer", rec.id) is not None
        scores = engine.score("newcomer", "reply", ["rude hostile", "kind helpful"])
        assert len(scores) == 2
        similar = engine.similar_users("newcomer", k=3)
        assert {s.user_id for s in similar} == {"user0", "user2", "user4"}  # who like kind words
        counts = engine.delete_user("user0")
        assert counts["comparisons"] == 12 and counts["profiles"] == 1
        assert not engine.store.has_user("user0") and engine.store.profile_model_ids("user0") == []
        assert "user0" not in [s.user_id for s in engine.similar_users("newcomer", k=6)]
        assert engine.store.integrity_check() == "ok"
    finally:
        engine.store.close()


def test_change_log_entries_commit_in_seq_order(postgres_url):
    """A profile write waits for an earlier, uncommitted one: a reader that has seen the head
    never later finds a newly committed entry below it."""
    from persona_engine.schemas import ModelRecord, UserProfile

    store = PostgresStore(postgres_url)
    try:
        store.add_model(ModelRecord(id="m-v1", backend="m", version=1, path="/p", encoder="e"))
        done = threading.Event()

        def later_writer() -> None:
            store.put_profiles([UserProfile(user_id="b", model_id="m-v1", backend="m", vector=[1])])
            done.set()

        with store.transaction():  # an earlier writer, still open
            store.put_profiles([UserProfile(user_id="a", model_id="m-v1", backend="m", vector=[0])])
            thread = threading.Thread(target=later_writer)
            thread.start()
            assert not done.wait(0.5)  # the later writer waits for this commit
        thread.join(10)
        assert done.is_set()
        rowids, ids, _ = store.profile_rows("m-v1")
        order = [store.changed_profile_rows("m-v1", s - 1, s) for s in (1, 2)]
        assert order == [[int(rowids[ids.index("a")])], [int(rowids[ids.index("b")])]]
    finally:
        store.close()


def test_outcomes_of_a_store_made_before_keying_by_comparison_survive_the_migration(postgres_url):
    """m007 on a database with data: each old outcome row finds its comparison."""
    from persona_engine.store.postgres_schema import MIGRATION_SET

    before = ALL[: ALL.index("m007_online_eval_by_comparison")]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE persona_engine_migrations (migration_set TEXT NOT NULL, "
            "name TEXT NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (migration_set, name))"
        )
        for name, statements in MIGRATIONS:
            if name in before:
                for sql in statements:
                    conn.execute(sql)
                conn.execute(
                    "INSERT INTO persona_engine_migrations VALUES (%s, %s, 'x')",
                    (MIGRATION_SET, name),
                )
        conn.execute(
            "INSERT INTO users(id, tenant, attributes, created_at) VALUES ('u1', '', '{}', 'x')"
        )
        for h in ("p", "a", "b", "c"):
            conn.execute(
                "INSERT INTO items(hash, kind, text, created_at) VALUES (%s, 'text', %s, 'x')",
                (h, h),
            )
        for x, y in (("a", "b"), ("a", "c")):
            conn.execute(
                "INSERT INTO comparisons(user_id, prompt_hash, chosen_hash, rejected_hash, "
                "created_at) VALUES ('u1', 'p', %s, %s, '2026-12-01')",
                (x, y),
            )
        conn.execute(
            "INSERT INTO online_eval(model_id, user_id, prompt_hash, chosen_hash, rejected_hash, "
            "margin, correct, new_items, n_before, state, created_at) "
            "VALUES ('m-v1', 'u1', 'p', 'a', 'c', -0.5, 0, 0, 1, 'profile', '2026-12-01')"
        )
    store = PostgresStore(postgres_url)
    try:
        assert store.applied == ["m007_online_eval_by_comparison"]
        rows = store.online_outcomes()
        assert [(r["margin"], r["correct"], r["n_before"], r["new_items"]) for r in rows] == [
            (-0.5, 0, 1, 0)
        ]
        assert store.complete_outcomes() == 0
    finally:
        store.close()
