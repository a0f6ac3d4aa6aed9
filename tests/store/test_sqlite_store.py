"""What only the SQLite store does (its shared behaviour is in test_store_conformance.py)."""

from sqlite_utils import Database

from persona_engine.schemas import Comparison, content_hash
from persona_engine.store import Store, migrations


def test_blank_db_migrates_to_latest_schema():
    store = Store(Database(memory=True))
    tables = set(store.db.table_names())
    assert {
        "users",
        "items",
        "comparisons",
        "features",
        "models",
        "profiles",
        "online_eval",
    } <= tables
    assert [m.name for m in migrations.applied(store.db)] == [
        "m001_initial",
        "m002_pair_features",
        "m003_online_eval",
        "m004_online_eval_by_comparison",
    ]
    assert store.db["features"].pks == ["encoder", "prompt_hash", "hash"]
    assert store.db["comparisons"].columns_dict["strength"] is float
    # migrating again is a no-op
    migrations.apply(store.db)
    assert len(migrations.applied(store.db)) == 4


def test_file_store_uses_wal(tmp_path):
    store = Store(tmp_path / "x.db")
    assert store.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.integrity_check() == "ok"


def test_outcomes_of_a_store_made_before_keying_by_comparison_survive_the_migration(tmp_path):
    """m004: each old outcome row finds its comparison and keeps its figures."""
    path = tmp_path / "old.db"
    db = Database(path)
    migrations.apply(db, stop_before="m004_online_eval_by_comparison")
    comps = [
        Comparison(user_id="u1", prompt="q", chosen=f"good {i}", rejected=f"bad {i}")
        for i in range(3)
    ]
    db.execute("INSERT INTO users(id, tenant, attributes, created_at) VALUES ('u1', '', '{}', 'x')")
    for c in comps:
        h = [content_hash(t) for t in (c.prompt, c.chosen, c.rejected)]
        for hv, text in zip(h, (c.prompt, c.chosen, c.rejected)):
            db.execute(
                "INSERT OR IGNORE INTO items(hash, kind, text, created_at) VALUES (?, 'text', ?, 'x')",
                [hv, text],
            )
        db.execute(
            "INSERT INTO comparisons(user_id, prompt_hash, chosen_hash, rejected_hash, created_at) "
            "VALUES ('u1', ?, ?, ?, '2026-12-01')",
            h,
        )
    for i, (c, margin) in enumerate(zip(comps[:2], (0.5, -0.25))):
        h = [content_hash(t) for t in (c.prompt, c.chosen, c.rejected)]
        db.execute(
            "INSERT INTO online_eval(model_id, user_id, prompt_hash, chosen_hash, rejected_hash, "
            "margin, correct, new_items, n_before, state, created_at) "
            "VALUES ('m-v1', 'u1', ?, ?, ?, ?, ?, 1, ?, 'prior', '2026-12-01')",
            [*h, margin, int(margin > 0), i],
        )
    db.conn.commit()
    db.close()
    store = Store(path)
    rows = store.online_outcomes()
    assert [(r["margin"], r["correct"], r["n_before"], r["new_items"]) for r in rows] == [
        (0.5, 1, 0, 1),
        (-0.25, 0, 1, 1),
    ]
    assert store.complete_outcomes() == 0  # their figures came with them
    assert "m004_online_eval_by_comparison" in [m.name for m in migrations.applied(store.db)]
