"""Helpers shared by the personalized-backend tests (a module with a unique name: several test
folders have a ``conftest.py``, so ``from conftest import ...`` would pick whichever came first)."""

from __future__ import annotations

import numpy as np

from persona_engine.backends import PreferenceData


def split_population(pop, n_train_users=20, seen_rows=30, shots=10):
    """Seen users' first rows for training (the rest held out); new users' first rows as shots."""
    data, rows = pop.data, pop.data.rows_of_users()
    train_users = data.user_ids[:n_train_users]
    train = data.subset(np.concatenate([rows[u][:seen_rows] for u in train_users]))
    seen_test = {u: data.subset(rows[u][seen_rows:]) for u in train_users}
    new = {
        u: (data.subset(rows[u][:shots]), data.subset(rows[u][shots + 10 :]))
        for u in data.user_ids[n_train_users:]
    }
    return train, seen_test, new


def accuracy(model, state, data: PreferenceData) -> float:
    """Share of ``data``'s comparisons the model orders as the user did."""
    return float((model.preference_logits(state, data) > 0).mean())
