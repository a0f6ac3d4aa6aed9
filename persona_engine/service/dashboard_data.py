"""What the dashboard reads for one tenant: data counts, the profile map, the users list, a user's
comparisons and online outcomes.

Every read goes through the service's :class:`~.reads.StoreReader` (WAL read connections, never the
writer's) and is filtered by the ``tenant`` column of ``users``. A user's comparisons and outcomes
and a model version's profiles are read through their indexes. The tenant's counts and the profile
map read all the tenant's rows and are cached (:mod:`.dashboard_cache`); the users list walks the
users' primary key in order, which for a small tenant among many users reads past the others' rows
(the store has no index on ``users.tenant``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .reads import StoreReader

#: most points drawn on the users map (a deterministic sample beyond that)
MAP_POINTS = 5000
#: comparisons per page of a user's history
COMPARISONS_PAGE = 25
#: users per page of the users list
USERS_PAGE = 50


def tenant_counts(reader: StoreReader, tenant: str) -> dict[str, int]:
    """Users, comparisons, profiles (all model versions) and online outcomes of one tenant."""
    sql = (
        "SELECT (SELECT count(*) FROM users WHERE tenant=?), "
        "(SELECT count(*) FROM comparisons c JOIN users u ON u.id = c.user_id WHERE u.tenant=?), "
        "(SELECT count(*) FROM profiles p JOIN users u ON u.id = p.user_id WHERE u.tenant=?), "
        "(SELECT count(*) FROM online_eval o JOIN comparisons c ON c.id = o.comparison_id "
        "JOIN users u ON u.id = c.user_id WHERE u.tenant=?)"
    )
    row = reader.query(sql, (tenant,) * 4)[0]
    return dict(zip(("users", "comparisons", "profiles", "online_outcomes"), map(int, row)))


# -- the users map -----------------------------------------------------------------------------
@dataclass
class ProfileMap:
    """A 2-D PCA projection of one model version's profiles of a tenant's users.

    ``user_ids`` (stored ids), ``xy`` and ``attributes`` are the drawn sample; ``accuracy`` holds
    every user of the tenant with online outcomes under the model: stored id -> (correct, n).
    """

    model_id: str
    n_profiles: int
    dim: int
    user_ids: list[str]
    xy: np.ndarray
    explained: tuple[float, float]
    attributes: list[dict[str, Any]]
    accuracy: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: the drawn map by colour (PNG data URIs), filled as colours are asked for
    images: dict[str, str] = field(default_factory=dict)

    def attribute_names(self) -> list[str]:
        return sorted({k for a in self.attributes for k in a})

    def sample_accuracy(self) -> np.ndarray:
        """Online accuracy of each drawn user (NaN for users without outcomes)."""
        out = np.full(len(self.user_ids), np.nan)
        for i, u in enumerate(self.user_ids):
            hit = self.accuracy.get(u)
            if hit is not None:
                out[i] = hit[0] / hit[1]
        return out


def pca_2d(matrix: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Rows projected on the two leading principal components, and the share of the variance each
    explains. Signs are fixed (each component's largest loading positive), so the picture does
    not flip between loads."""
    n, dim = matrix.shape
    if n == 0 or dim == 0:
        return np.zeros((n, 2)), (0.0, 0.0)
    x = matrix.astype(np.float64) - matrix.mean(axis=0, dtype=np.float64)
    values, vectors = np.linalg.eigh(x.T @ x / max(n - 1, 1))
    order = np.argsort(values)[::-1][:2]
    comps = vectors[:, order]
    for j in range(comps.shape[1]):
        if comps[np.abs(comps[:, j]).argmax(), j] < 0:
            comps[:, j] *= -1.0
    xy = np.zeros((n, 2))
    xy[:, : comps.shape[1]] = x @ comps
    total = float(values.sum())
    shares = [float(values[i] / total) if total > 0 else 0.0 for i in order] + [0.0, 0.0]
    return xy, (shares[0], shares[1])


def profile_map(
    reader: StoreReader, tenant: str, model_id: str, max_points: int = MAP_POINTS
) -> ProfileMap:
    """Project every profile of the tenant's users under ``model_id``; keep ``max_points`` of them
    (a fixed random sample) with their attributes, and every user's online accuracy."""
    rows = reader.query(
        "SELECT p.user_id, p.dim, p.vector FROM profiles p JOIN users u ON u.id = p.user_id "
        "WHERE p.model_id=? AND u.tenant=? ORDER BY p.user_id",
        (model_id, tenant),
    )
    ids = [r[0] for r in rows]
    dims = {r[1] for r in rows}
    if len(dims) > 1:  # a version's vectors share one length; refuse to draw a mixture
        raise ValueError(f"profiles of {model_id} have vectors of lengths {sorted(dims)}")
    dim = dims.pop() if dims else 0
    matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), dim)
    xy, explained = pca_2d(matrix)
    keep = np.arange(len(ids))
    if len(ids) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(len(ids), max_points, replace=False))
    sample = [ids[i] for i in keep]
    attributes = user_attributes(reader, sample)
    accuracy = {
        u: (int(hits), int(n))
        for u, hits, n in reader.query(
            "SELECT c.user_id, sum(CAST(o.margin > 0 AS INTEGER)), count(*) FROM online_eval o "
            "JOIN comparisons c ON c.id = o.comparison_id JOIN users u ON u.id = c.user_id "
            "WHERE o.model_id=? AND u.tenant=? GROUP BY c.user_id",
            (model_id, tenant),
        )
    }
    return ProfileMap(
        model_id=model_id,
        n_profiles=len(ids),
        dim=dim,
        user_ids=sample,
        xy=xy[keep],
        explained=explained,
        attributes=[attributes.get(u, {}) for u in sample],
        accuracy=accuracy,
    )


def user_attributes(reader: StoreReader, stored_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(stored_ids), 500):
        chunk = list(stored_ids[i : i + 500])
        marks = ",".join("?" * len(chunk))
        for uid, text in reader.query(
            f"SELECT id, attributes FROM users WHERE id IN ({marks})", chunk
        ):
            out[uid] = json.loads(text)
    return out


# -- lists and one user ----------------------------------------------------------------------
def users_page(reader: StoreReader, tenant: str, page: int) -> tuple[list[tuple[str, int]], bool]:
    """One page of the tenant's users by id, with their number of comparisons; and whether a next
    page exists."""
    rows = reader.query(
        "SELECT id FROM users WHERE tenant=? ORDER BY id LIMIT ? OFFSET ?",
        (tenant, USERS_PAGE + 1, page * USERS_PAGE),
    )
    ids = [r[0] for r in rows[:USERS_PAGE]]
    counts: dict[str, int] = {}
    if ids:
        marks = ",".join("?" * len(ids))
        counts = dict(
            reader.query(
                f"SELECT user_id, count(*) FROM comparisons WHERE user_id IN ({marks}) GROUP BY user_id",
                ids,
            )
        )
    return [(u, int(counts.get(u, 0))) for u in ids], len(rows) > USERS_PAGE


@dataclass(frozen=True)
class ComparisonRow:
    id: int
    prompt: str
    chosen: str
    rejected: str
    kind: str
    strength: float
    tie: bool
    source: str
    created_at: str


def user_comparisons(reader: StoreReader, stored_id: str, page: int) -> list[ComparisonRow]:
    """One page of a user's comparisons, latest first (the user's index; no table scan)."""
    rows = reader.query(
        "SELECT c.id, COALESCE(p.text, p.uri), COALESCE(a.text, a.uri), COALESCE(b.text, b.uri), "
        "a.kind, c.strength, c.tie, c.source, c.created_at FROM comparisons c "
        "JOIN items p ON p.hash = c.prompt_hash JOIN items a ON a.hash = c.chosen_hash "
        "JOIN items b ON b.hash = c.rejected_hash WHERE c.user_id=? ORDER BY c.id DESC LIMIT ? OFFSET ?",
        (stored_id, COMPARISONS_PAGE, page * COMPARISONS_PAGE),
    )
    return [
        ComparisonRow(
            id=r[0],
            prompt=r[1],
            chosen=r[2],
            rejected=r[3],
            kind=r[4],
            strength=r[5],
            tie=bool(r[6]),
            source=r[7],
            created_at=r[8],
        )
        for r in rows
    ]


def user_outcomes(engine: Any, stored_id: str, recent: int = 20) -> dict[str, Any]:
    """A user's online outcomes: per model version (n, accuracy, log-loss) and the latest ones."""
    rows = engine.store.online_outcomes(user_id=stored_id)
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_model.setdefault(r["model_id"], []).append(r)
    summary = []
    for model_id, rs in sorted(by_model.items()):
        margin = np.array([r["margin"] for r in rs], dtype=np.float64)
        summary.append(
            {
                "model_id": model_id,
                "n": len(rs),
                "accuracy": float(np.mean([r["correct"] for r in rs])),
                "log_loss": float(np.logaddexp(0.0, -margin).mean()),
            }
        )
    return {"n": len(rows), "by_model": summary, "recent": rows[::-1][:recent]}
