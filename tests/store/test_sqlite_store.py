"""What only the SQLite store does (its shared behaviour is in test_store_conformance.py)."""

from sqlite_utils import Database

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
    ]
    assert store.db["features"].pks == ["encoder", "prompt_hash", "hash"]
    assert store.db["comparisons"].columns_dict["strength"] is float
    # migrating again is a no-op
    migrations.apply(store.db)
    assert len(migrations.applied(store.db)) == 3


def test_file_store_uses_wal(tmp_path):
    store = Store(tmp_path / "x.db")
    assert store.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.integrity_check() == "ok"
