"""The population's user space: a new user is embedded inside the subspace training users span.

PPD pools a user from N = 4 labelled pairs (:func:`.users.pool_pairs`). In a D-dimensional image
embedding (D = 32 for ``tiny-image``) the mean of 4 feature differences is noisy in every
direction, while the preferences of a population occupy few directions: users live in a shared
low-dimensional space (LoRe, Bose et al. 2025, arXiv 2504.14439; PAL, Chen et al., ICLR 2025).
With ``AdapterConfig.user_space = "population"`` the model keeps a basis ``B`` (k, D) of that space
and every user embedding, a training user's (in Diffusion-DPO) as a new user's (onboarding), is

    u = normalize( B^T B m ),    m = sum_i s_i (phi(x_i^w) - phi(x_i^l)) / sum_i s_i

**The basis** (:func:`fit_user_space`): each training user ``j`` embedded from all their pairs,
``v_j = mean_p (phi(x_p^w) - phi(x_p^l))`` (unnormalised), and ``B`` the top ``k`` right singular
vectors of ``V = [v_1; ...; v_U]``, *uncentred*: a user embedding is a direction from the origin
(zero is the null user of guidance, and a user who prefers the opposite of another has the
opposite vector), so the space is a linear subspace through 0. The projection then keeps
``P(-m) = -P(m)`` and ``P(0) = 0``; a centred (affine) fit would move the origin to the training
users' mean, which is not zero when the population is lopsided (the synthetic task leaves an
octant of tastes out), and opposite users would no longer get opposite embeddings.

**The dimension ``k``** (:func:`choose_rank`), fixed in advance and gold-free (only the training
users' own pairs): cross-validated agreement of few-pair embeddings with the rest of the user's
pairs. In each of :data:`FOLDS` folds every user's pairs are split at random into ``shots`` (the
onboarding size) and the rest; the basis is fitted on the rest's vectors ``r_j``, and for every
``k`` the agreement is ``mean_j cos(B_k^T B_k s_j, r_j)``, ``s_j`` the shots' mean difference.
``k`` maximises the agreement averaged over the folds (the smallest ``k`` on a tie). ``k = D`` is
the identity, the plain pooling, so the rule can decline to project.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from persona_engine.errors import InvalidInputError

#: Random splits of every training user's pairs that the choice of ``k`` averages over.
FOLDS = 4
#: File of the basis in a model directory (a safetensors tensor ``basis``, (k, D)).
BASIS_FILE = "user_space.safetensors"


@dataclass
class UserSpace:
    """An orthonormal basis (k, D) of the population's user space, and how it was chosen."""

    basis: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        b = np.ascontiguousarray(self.basis, dtype=np.float32)
        if b.ndim != 2 or not 1 <= b.shape[0] <= b.shape[1]:
            raise InvalidInputError(
                f"a user-space basis has shape (k, D) with 1 <= k <= D, got {b.shape}"
            )
        if not np.isfinite(b).all() or not np.allclose(b @ b.T, np.eye(len(b)), atol=1e-3):
            raise InvalidInputError("a user-space basis must have orthonormal rows")
        self.basis = b

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])

    @property
    def width(self) -> int:
        return int(self.basis.shape[1])

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """``B^T B v`` of vectors (..., D): their component inside the space."""
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim == 0 or v.shape[-1] != self.width:
            raise InvalidInputError(
                f"user vectors of width {v.shape[-1] if v.ndim else 0} cannot be projected onto "
                f"a user space of width {self.width} (the model's user embedding)"
            )
        return ((v @ self.basis.T) @ self.basis).astype(np.float32)


def _user_means(diffs: np.ndarray, rows: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([np.asarray(diffs[np.sort(r)], dtype=np.float64).mean(axis=0) for r in rows])


def _right_singular(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(basis rows (r, D), squared singular values (r,)) of the uncentred vectors, rank r."""
    _, s, vt = np.linalg.svd(np.asarray(vectors, dtype=np.float64), full_matrices=False)
    keep = s > s.max() * 1e-6 if len(s) and s.max() > 0 else np.zeros(len(s), bool)
    return vt[keep], s[keep] ** 2


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    return (a * b).sum(axis=-1) / np.maximum(na * nb, 1e-12)


def choose_rank(
    diffs: np.ndarray,
    user_rows: Sequence[np.ndarray],
    shots: int,
    *,
    seed: int = 0,
) -> tuple[int, list[float]]:
    """The rank ``k`` of the user space (see the module docstring): (k, the agreement at each
    k = 1..K, averaged over :data:`FOLDS` folds). Users with at most ``shots`` pairs are left
    out of the choice (they have no pairs to compare with)."""
    rows = [np.asarray(r) for r in user_rows if len(r) > shots]
    if len(rows) < 2:
        raise InvalidInputError(
            f"choosing the user space's dimension needs at least 2 training users with more than {shots} pairs"
        )
    width = diffs.shape[1]
    rng = np.random.default_rng([seed, 15])
    curves = []
    for _ in range(FOLDS):
        splits = [rng.permutation(r) for r in rows]
        s = _user_means(diffs, [p[:shots] for p in splits])
        r = _user_means(diffs, [p[shots:] for p in splits])
        basis, _ = _right_singular(r)
        coords = s @ basis.T  # (U, rank): the shots' embedding in the basis, best direction first
        curve = [
            float(_cosine(coords[:, :k] @ basis[:k], r).mean()) for k in range(1, len(basis) + 1)
        ]
        # past the reference vectors' rank the projection adds nothing new but the rest of R^D:
        # k = D is the plain pooling, so it is always a candidate
        curve += [float(_cosine(s, r).mean())] * (width - len(basis))
        curves.append(curve)
    agreement = np.mean(np.asarray(curves), axis=0)
    best = int(np.flatnonzero(agreement >= agreement.max() - 1e-9)[0]) + 1
    return best, [round(float(a), 4) for a in agreement]


def fit_user_space(
    diffs: np.ndarray,
    user_rows: Sequence[np.ndarray],
    shots: int,
    *,
    seed: int = 0,
) -> UserSpace:
    """The population's user space from the training users' pairs: ``diffs`` (n, D) each pair's
    ``phi(chosen) - phi(rejected)``, ``user_rows`` the pair rows of each training user (see the
    module docstring). Gold-free: nothing but the pairs' feature differences."""
    if diffs.ndim != 2 or diffs.shape[0] == 0:
        raise InvalidInputError(f"pair feature differences must be (n, D), got {diffs.shape}")
    rows = [np.asarray(r) for r in user_rows if len(r)]
    k, agreement = choose_rank(diffs, rows, shots, seed=seed)
    basis, energy = _right_singular(_user_means(diffs, rows))
    k = min(k, len(basis))
    explained = np.cumsum(energy) / energy.sum()
    return UserSpace(
        basis[:k].astype(np.float32),
        {
            "kind": "population",
            "rank": k,
            "width": int(diffs.shape[1]),
            "rule": f"argmax over k of the mean cosine between {shots}-pair embeddings projected onto k dimensions and the user's other pairs ({FOLDS} random splits)",
            "agreement_by_rank": agreement,
            "agreement_chosen": agreement[k - 1],
            "agreement_unprojected": agreement[-1],
            "explained_by_rank": [round(float(x), 4) for x in explained],
            "training_users": len(rows),
        },
    )


def population_space(
    model: Any, diffs: np.ndarray, user_rows: Sequence[np.ndarray], *, shots: int, seed: int
) -> UserSpace | None:
    """The space a PPD model's user embeddings live in, for its trainer: None for PPD's pooling
    (``adapter.user_space="encoder"``); for ``"population"`` the model's :class:`UserSpace`,
    fitted here on the training pairs (``diffs`` (n, D), each pair's feature difference;
    ``user_rows``, each training user's rows) when the model has none yet."""
    if model.adapter.cfg.user_space != "population":
        if model.user_space is not None:
            raise ValueError("the model has a population user space but user_space='encoder'")
        return None
    if model.user_space is None:
        model.user_space = fit_user_space(diffs, user_rows, shots, seed=seed)
    space: UserSpace = model.user_space
    if space.width != model.user_dim:
        raise ValueError(
            f"the user space has width {space.width}, the adapter takes {model.user_dim}"
        )
    return space


def save_user_space(space: UserSpace, directory: Any) -> dict[str, Any]:
    """Write the basis into a model directory; returns its entry for ``ppd.json``."""
    import torch
    from safetensors.torch import save_file

    save_file({"basis": torch.from_numpy(space.basis)}, str(directory / BASIS_FILE))
    return {**space.info, "file": BASIS_FILE, "rank": space.rank, "width": space.width}


def load_user_space(directory: Any, entry: dict[str, Any] | None, user_dim: int) -> UserSpace:
    """The basis a model directory keeps (``entry``: its ``ppd.json`` record), checked against
    the model's user-embedding width."""
    from safetensors.numpy import load_file

    from persona_engine.errors import NoModelError

    path = directory / (entry or {}).get("file", BASIS_FILE)
    if entry is None or not path.is_file():
        raise NoModelError(
            f"the PPD model at {directory} embeds users in the population's space (user_space='population') but has no {BASIS_FILE}"
        )
    basis = load_file(str(path))["basis"]
    if basis.ndim != 2 or basis.shape[1] != user_dim:
        raise NoModelError(
            f"the user-space basis at {path} has shape {tuple(basis.shape)}; the model's user embedding has width {user_dim}"
        )
    return UserSpace(basis, {k: v for k, v in entry.items() if k != "file"})
