"""The SQLite store's profile change log: triggers append ``(seq, model_id, row_id)`` to
``profile_changes`` on every insert, update and delete of a profile, whoever writes.

Its own migration set (named ``persona_engine.retrieval``, as when it lived beside the indexes),
applied on first use by :meth:`persona_engine.store.Store.install_change_log`.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

changes = Migrations("persona_engine.retrieval")


@changes()
def m001_profile_changes(db: Database) -> None:
    db.execute(
        "CREATE TABLE profile_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "model_id TEXT NOT NULL, row_id INTEGER NOT NULL)"
    )
    db.execute(
        "CREATE TABLE profile_changes_pruned (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "through INTEGER NOT NULL)"
    )
    db.execute("INSERT INTO profile_changes_pruned(id, through) VALUES (1, 0)")
    for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        db.execute(
            f"CREATE TRIGGER profiles_log_{event.lower()} AFTER {event} ON profiles BEGIN "
            f"INSERT INTO profile_changes(model_id, row_id) VALUES ({row}.model_id, {row}.rowid); END"
        )
