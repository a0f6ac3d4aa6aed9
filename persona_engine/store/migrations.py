"""Schema of the persona_engine store. Append-only: add a new ``m00N_`` function, never edit one."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("persona_engine")
#: the HTTP service's API keys: their own set, under the name they had when the service applied it
service_migrations = Migrations("persona_engine.service")


@migrations()
def m001_initial(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE users (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL DEFAULT '',
            attributes TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE items (
            hash TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            text TEXT,
            uri TEXT,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE comparisons (
            id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id),
            prompt_hash TEXT NOT NULL REFERENCES items(hash),
            chosen_hash TEXT NOT NULL REFERENCES items(hash),
            rejected_hash TEXT NOT NULL REFERENCES items(hash),
            strength REAL NOT NULL DEFAULT 1.0,
            tie INTEGER NOT NULL DEFAULT 0,
            source TEXT NOT NULL DEFAULT '',
            meta TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            UNIQUE (user_id, prompt_hash, chosen_hash, rejected_hash)
        )"""
    )
    db.execute("CREATE INDEX idx_comparisons_user ON comparisons(user_id)")
    db.execute(
        """
        CREATE TABLE features (
            encoder TEXT NOT NULL,
            hash TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (encoder, hash)
        )"""
    )
    db.execute(
        """
        CREATE TABLE models (
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
            UNIQUE (backend, version)
        )"""
    )
    db.execute(
        """
        CREATE TABLE profiles (
            user_id TEXT NOT NULL,
            model_id TEXT NOT NULL REFERENCES models(id),
            backend TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
            uncertainty BLOB,
            weights TEXT,
            n_comparisons INTEGER NOT NULL DEFAULT 0,
            source TEXT NOT NULL DEFAULT 'onboarded',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (user_id, model_id)
        )"""
    )
    db.execute("CREATE INDEX idx_profiles_model ON profiles(model_id)")


@migrations()
def m002_pair_features(db: Database) -> None:
    """Key cached features by (encoder, prompt hash, response hash).

    Encoders that read the prompt cache one row per (prompt, response) pair, and the features of a
    prompt alone under ``hash = ''``; encoders that do not read the prompt keep ``prompt_hash = ''``,
    so every row cached before this migration stays valid as it is.
    """
    db.execute(
        """
        CREATE TABLE features_v2 (
            encoder TEXT NOT NULL,
            prompt_hash TEXT NOT NULL DEFAULT '',
            hash TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (encoder, prompt_hash, hash)
        )"""
    )
    db.execute(
        "INSERT INTO features_v2(encoder, prompt_hash, hash, dim, vector) "
        "SELECT encoder, '', hash, dim, vector FROM features"
    )
    db.execute("DROP TABLE features")
    db.execute("ALTER TABLE features_v2 RENAME TO features")
    db.execute("CREATE INDEX idx_features_hash ON features(hash)")
    db.execute("CREATE INDEX idx_features_prompt ON features(prompt_hash) WHERE prompt_hash != ''")


@migrations()
def m003_online_eval(db: Database) -> None:
    """Prequential outcomes: each new comparison scored by the active model before it was stored.

    One row per (comparison, model version). ``correct`` is 1 when the model preferred the chosen
    response; ``margin`` is r(chosen) - r(rejected) for the user's state at that moment;
    ``n_before`` how many comparisons the user had given before this one; ``new_items`` whether
    neither response appeared in any of the user's earlier comparisons; ``state`` what scored it
    (``profile`` or ``prior``: the cold-start rule).
    """
    db.execute(
        """
        CREATE TABLE online_eval (
            id INTEGER PRIMARY KEY,
            model_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            prompt_hash TEXT NOT NULL,
            chosen_hash TEXT NOT NULL,
            rejected_hash TEXT NOT NULL,
            margin REAL NOT NULL,
            correct INTEGER NOT NULL,
            new_items INTEGER NOT NULL,
            n_before INTEGER NOT NULL,
            state TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (user_id, prompt_hash, chosen_hash, rejected_hash, model_id)
        )"""
    )
    db.execute("CREATE INDEX idx_online_model_time ON online_eval(model_id, created_at)")
    db.execute("CREATE INDEX idx_online_user ON online_eval(user_id)")


@migrations()
def m004_online_eval_by_comparison(db: Database) -> None:
    """Outcomes keyed by the comparison they scored (see :mod:`persona_engine.store.online`).

    A row keeps what only the moment of arrival knows (model version, margin, what scored it);
    the user, the time, ``n_before`` and ``new_items`` follow from the comparisons table, the last
    two computed on read until :func:`~persona_engine.store.online.complete_outcomes` keeps them.
    Rows written before this migration keep their figures; a comparison scored under two versions
    keeps its first outcome (new outcomes are written once per comparison).
    """
    db.execute(
        """
        CREATE TABLE online_eval_v2 (
            comparison_id INTEGER PRIMARY KEY,
            model_id TEXT NOT NULL,
            margin REAL NOT NULL,
            state TEXT NOT NULL,
            n_before INTEGER,
            new_items INTEGER
        )"""
    )
    db.execute(
        "INSERT OR IGNORE INTO online_eval_v2(comparison_id, model_id, margin, state, n_before, "
        "new_items) SELECT c.id, o.model_id, o.margin, o.state, o.n_before, o.new_items "
        "FROM online_eval o JOIN comparisons c ON c.user_id = o.user_id "
        "AND c.prompt_hash = o.prompt_hash AND c.chosen_hash = o.chosen_hash "
        "AND c.rejected_hash = o.rejected_hash ORDER BY o.id"
    )
    db.execute("DROP TABLE online_eval")
    db.execute("ALTER TABLE online_eval_v2 RENAME TO online_eval")
    db.execute("CREATE INDEX idx_online_model ON online_eval(model_id, comparison_id)")
    db.execute(
        "CREATE INDEX idx_online_pending ON online_eval(comparison_id) WHERE n_before IS NULL"
    )


@service_migrations()
def m001_api_keys(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            hash TEXT NOT NULL,
            tenant TEXT NOT NULL DEFAULT '',
            name TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )"""
    )
