"""Schema of the PostgreSQL store, and the migrator that applies it.

Append-only, as for SQLite (:mod:`persona_engine.store.migrations`): add a new ``(name, [SQL])``
to :data:`MIGRATIONS`, never edit one. The tables mirror SQLite's, column for column, so both
stores return the same values: texts and JSON as ``text``, timestamps as ISO strings, vectors as
little-endian float32 ``bytea``. What differs: identity columns instead of rowids (``profiles``
gets a ``row_id`` for the change log, ``models`` a ``seq`` for ordering), indexes on the item
columns of ``comparisons`` (so deleting a user's orphan items is index lookups), and at most one
active model per backend enforced by a partial unique index.

The change log is part of the schema here: statement-level triggers with transition tables append
every changed profile row to ``profile_changes``. Each log write first takes a transaction-level
advisory lock, held to commit, so log entries commit in ``seq`` order: a reader that has seen
``seq = n`` never later finds a newly committed entry below ``n`` (with a bare identity column,
two concurrent writers can commit out of order and a reader would skip the slower one).
"""

from __future__ import annotations

from typing import Any

from .base import now_iso

#: the set this module's migrations are recorded under in ``persona_engine_migrations``
MIGRATION_SET = "persona_engine"
#: advisory lock keys (bigint), scoped to one database
MIGRATION_LOCK = 0x7065_7273_6F6E_0001
CHANGE_LOG_LOCK = 0x7065_7273_6F6E_0002
#: the channel every commit that changes profiles notifies (see m006)
PROFILE_CHANGES_CHANNEL = "persona_profile_changes"

MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "m001_initial",
        [
            """CREATE TABLE users (
                id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL DEFAULT '',
                attributes TEXT NOT NULL DEFAULT '{}',
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX idx_users_tenant ON users(tenant)",
            """CREATE TABLE items (
                hash TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                text TEXT,
                uri TEXT,
                created_at TEXT NOT NULL
            )""",
            """CREATE TABLE comparisons (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                user_id TEXT NOT NULL REFERENCES users(id),
                prompt_hash TEXT NOT NULL REFERENCES items(hash),
                chosen_hash TEXT NOT NULL REFERENCES items(hash),
                rejected_hash TEXT NOT NULL REFERENCES items(hash),
                strength DOUBLE PRECISION NOT NULL DEFAULT 1.0,
                tie INTEGER NOT NULL DEFAULT 0,
                source TEXT NOT NULL DEFAULT '',
                meta TEXT NOT NULL DEFAULT '{}',
                created_at TEXT NOT NULL,
                UNIQUE (user_id, prompt_hash, chosen_hash, rejected_hash)
            )""",
            "CREATE INDEX idx_comparisons_prompt ON comparisons(prompt_hash)",
            "CREATE INDEX idx_comparisons_chosen ON comparisons(chosen_hash)",
            "CREATE INDEX idx_comparisons_rejected ON comparisons(rejected_hash)",
            """CREATE TABLE features (
                encoder TEXT NOT NULL,
                prompt_hash TEXT NOT NULL DEFAULT '',
                hash TEXT NOT NULL,
                dim INTEGER NOT NULL,
                vector BYTEA NOT NULL,
                PRIMARY KEY (encoder, prompt_hash, hash)
            )""",
            "CREATE INDEX idx_features_hash ON features(hash)",
            "CREATE INDEX idx_features_prompt ON features(prompt_hash) WHERE prompt_hash != ''",
            """CREATE TABLE models (
                id TEXT PRIMARY KEY,
                backend TEXT NOT NULL,
                version INTEGER NOT NULL,
                path TEXT NOT NULL,
                encoder TEXT NOT NULL,
                config TEXT NOT NULL DEFAULT '{}',
                data TEXT NOT NULL DEFAULT '{}',
                metrics TEXT NOT NULL DEFAULT '{}',
                trained_at TEXT NOT NULL,
                active INTEGER NOT NULL DEFAULT 0,
                seq BIGINT GENERATED ALWAYS AS IDENTITY,
                UNIQUE (backend, version)
            )""",
            "CREATE UNIQUE INDEX idx_models_one_active ON models(backend) WHERE active = 1",
            """CREATE TABLE profiles (
                row_id BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
                user_id TEXT NOT NULL,
                model_id TEXT NOT NULL REFERENCES models(id),
                backend TEXT NOT NULL,
                dim INTEGER NOT NULL,
                vector BYTEA NOT NULL,
                uncertainty BYTEA,
                weights TEXT,
                n_comparisons INTEGER NOT NULL DEFAULT 0,
                source TEXT NOT NULL DEFAULT 'onboarded',
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (user_id, model_id)
            )""",
            "CREATE INDEX idx_profiles_model ON profiles(model_id)",
        ],
    ),
    (
        "m002_online_eval",
        [
            """CREATE TABLE online_eval (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                model_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                prompt_hash TEXT NOT NULL,
                chosen_hash TEXT NOT NULL,
                rejected_hash TEXT NOT NULL,
                margin DOUBLE PRECISION NOT NULL,
                correct INTEGER NOT NULL,
                new_items INTEGER NOT NULL,
                n_before INTEGER NOT NULL,
                state TEXT NOT NULL,
                created_at TEXT NOT NULL,
                UNIQUE (user_id, prompt_hash, chosen_hash, rejected_hash, model_id)
            )""",
            "CREATE INDEX idx_online_model_time ON online_eval(model_id, created_at)",
            "CREATE INDEX idx_online_user ON online_eval(user_id)",
        ],
    ),
    (
        "m003_profile_changes",
        [
            """CREATE TABLE profile_changes (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                model_id TEXT NOT NULL,
                row_id BIGINT NOT NULL
            )""",
            """CREATE TABLE profile_changes_pruned (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                through BIGINT NOT NULL
            )""",
            "INSERT INTO profile_changes_pruned(id, through) VALUES (1, 0)",
            f"""CREATE FUNCTION persona_log_profile_changes() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                IF NOT EXISTS (SELECT 1 FROM changed) THEN
                    RETURN NULL;
                END IF;
                PERFORM pg_advisory_xact_lock({CHANGE_LOG_LOCK});
                INSERT INTO profile_changes(model_id, row_id)
                    SELECT model_id, row_id FROM changed ORDER BY row_id;
                RETURN NULL;
            END $$""",
            *(
                f"CREATE TRIGGER profiles_log_{event.lower()} AFTER {event} ON profiles "
                f"REFERENCING {table} TABLE AS changed FOR EACH STATEMENT "
                "EXECUTE FUNCTION persona_log_profile_changes()"
                for event, table in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD"))
            ),
        ],
    ),
    (
        "m004_api_keys",
        [
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                hash TEXT NOT NULL,
                tenant TEXT NOT NULL DEFAULT '',
                name TEXT NOT NULL DEFAULT '',
                created_at TEXT NOT NULL,
                revoked_at TEXT
            )""",
        ],
    ),
    (
        "m005_model_files",
        [
            """CREATE TABLE model_files (
                model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
                name TEXT NOT NULL,
                chunk INTEGER NOT NULL,
                sha256 TEXT NOT NULL,
                data BYTEA NOT NULL,
                PRIMARY KEY (model_id, name, chunk)
            )""",
        ],
    ),
    (
        # the log's function also notifies listeners; delivered at commit, once per transaction
        "m006_profile_change_notify",
        [
            f"""CREATE OR REPLACE FUNCTION persona_log_profile_changes() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                IF NOT EXISTS (SELECT 1 FROM changed) THEN
                    RETURN NULL;
                END IF;
                PERFORM pg_advisory_xact_lock({CHANGE_LOG_LOCK});
                INSERT INTO profile_changes(model_id, row_id)
                    SELECT model_id, row_id FROM changed ORDER BY row_id;
                PERFORM pg_notify('{PROFILE_CHANGES_CHANNEL}', '');
                RETURN NULL;
            END $$""",
        ],
    ),
    (
        # outcomes keyed by the comparison they scored (see persona_engine.store.online)
        "m007_online_eval_by_comparison",
        [
            """CREATE TABLE online_eval_v2 (
                comparison_id BIGINT PRIMARY KEY,
                model_id TEXT NOT NULL,
                margin DOUBLE PRECISION NOT NULL,
                state TEXT NOT NULL,
                n_before INTEGER,
                new_items INTEGER
            )""",
            "INSERT INTO online_eval_v2(comparison_id, model_id, margin, state, n_before, new_items) "
            "SELECT DISTINCT ON (c.id) c.id, o.model_id, o.margin, o.state, o.n_before, o.new_items "
            "FROM online_eval o JOIN comparisons c ON c.user_id = o.user_id "
            "AND c.prompt_hash = o.prompt_hash AND c.chosen_hash = o.chosen_hash "
            "AND c.rejected_hash = o.rejected_hash ORDER BY c.id, o.id",
            "DROP TABLE online_eval",
            "ALTER TABLE online_eval_v2 RENAME TO online_eval",
            "CREATE INDEX idx_online_model ON online_eval(model_id, comparison_id)",
            "CREATE INDEX idx_online_pending ON online_eval(comparison_id) WHERE n_before IS NULL",
        ],
    ),
]


def apply_migrations(conn: Any) -> list[str]:
    """Apply the migrations ``conn``'s database lacks, in one transaction; returns their names.

    A transaction-level advisory lock orders migrators: when two processes start at once, one
    applies and the other waits for its commit, then finds everything applied (and returns []).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS persona_engine_migrations ("
            "migration_set TEXT NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, "
            "PRIMARY KEY (migration_set, name))"
        )
        done = {name for (name,) in applied_migrations(conn)}
        applied = []
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            for sql in statements:
                conn.execute(sql)
            conn.execute(
                "INSERT INTO persona_engine_migrations(migration_set, name, applied_at) "
                "VALUES (%s, %s, %s)",
                (MIGRATION_SET, name, now_iso()),
            )
            applied.append(name)
    return applied


def applied_migrations(conn: Any) -> list[tuple[str]]:
    """(name,) of each applied migration, in the order they were applied."""
    return list(
        conn.execute(
            "SELECT name FROM persona_engine_migrations WHERE migration_set = %s "
            "ORDER BY applied_at, name",
            (MIGRATION_SET,),
        ).fetchall()
    )
