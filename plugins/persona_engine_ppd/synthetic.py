"""The synthetic image task: small pictures of one shape, and simulated users whose taste is known.

Every image shows one square or circle (the prompt) on black, with a random hue, brightness,
position and size. Three *gold features* are measured on the pixels of any image, rendered or
generated alike:

- ``redness``: how red the shape's colour is, ``sum w (R - (G + B)/2) / sum w V``;
- ``brightness``: the shape's mean HSV value ``sum w V / sum w``;
- ``x_position``: the intensity centroid's column, from -1 (left) to 1 (right);

with ink weights ``w = max(V - 0.15, 0)`` and ``V = max(R, G, B)``. A simulated user is a unit
weight vector over the standardised features; their reward is ``r_u(x) = w_u . z(x)``, and they
label a pair with Bradley-Terry noise, ``P(a > b) = sigmoid(tau (r_u(a) - r_u(b)))``. This is the
"each reward function is one user" set-up of PPD's synthetic multi-reward experiment (Dang et al.,
2025), with rewards one can compute exactly on generated pixels.

Images are float32 arrays ``(n, 3, H, W)`` in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SHAPES = ("square", "circle")
FEATURES = ("redness", "brightness", "x_position")


@dataclass
class ShapeImages:
    """Rendered images with the shape (prompt index) of each."""

    images: np.ndarray  # (n, 3, H, W) float32 in [0, 1]
    shapes: np.ndarray  # (n,) int index into SHAPES
    #: (n, 7) how each image was drawn: cos and sin of the hue angle, value, centre column and row
    #: and radius (as shares of the side), shape index. Visual attributes, not anyone's preference.
    attributes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def prompts(self) -> list[str]:
        return [SHAPES[s] for s in self.shapes]


def _hsv_to_rgb(h: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Fully saturated colours of hue ``h`` in [0, 1) and value ``v``: (n, 3)."""
    k = (np.array([5.0, 3.0, 1.0])[None, :] + h[:, None] * 6.0) % 6.0
    return v[:, None] * (1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))


def render_shapes(
    n: int, *, size: int = 16, rng: np.random.Generator, shapes: np.ndarray | None = None
) -> ShapeImages:
    """``n`` random images: hue uniform, value in [0.3, 1], centre in the middle half, radius 2-4 px
    (scaled with ``size``), anti-aliased edges."""
    if size < 8:
        raise ValueError("images must be at least 8x8")
    shape = (
        rng.integers(0, len(SHAPES), n) if shapes is None else np.asarray(shapes, dtype=np.int64)
    )
    hue = rng.random(n)
    value = rng.uniform(0.3, 1.0, n)
    scale = size / 16.0
    cx = rng.uniform(0.25 * size, 0.75 * size, n)
    cy = rng.uniform(0.25 * size, 0.75 * size, n)
    radius = rng.uniform(2.0, 4.0, n) * scale
    grid = np.arange(size, dtype=np.float64) + 0.5
    dx = grid[None, None, :] - cx[:, None, None]
    dy = grid[None, :, None] - cy[:, None, None]
    dist = np.where(
        (shape == 0)[:, None, None],
        np.maximum(np.abs(dx), np.abs(dy)),  # square: Chebyshev distance
        np.sqrt(dx**2 + dy**2),  # circle
    )
    mask = np.clip(radius[:, None, None] + 0.5 - dist, 0.0, 1.0)
    rgb = _hsv_to_rgb(hue, value)
    images = mask[:, None, :, :] * rgb[:, :, None, None]
    attributes = np.stack(
        [
            np.cos(2 * np.pi * hue),
            np.sin(2 * np.pi * hue),
            value,
            cx / size,
            cy / size,
            radius / size,
            shape,
        ],
        axis=1,
    )
    return ShapeImages(
        images.astype(np.float32), shape.astype(np.int64), attributes.astype(np.float32)
    )


def gold_features(images: np.ndarray) -> np.ndarray:
    """The raw gold features (n, 3) of images (n, 3, H, W) in [0, 1] (see the module docstring)."""
    x = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (n, 3, H, W), got {x.shape}")
    value = x.max(axis=1)
    w = np.maximum(value - 0.15, 0.0)
    total = w.sum(axis=(1, 2)) + 1e-8
    red = x[:, 0] - 0.5 * (x[:, 1] + x[:, 2])
    redness = (w * red).sum(axis=(1, 2)) / ((w * value).sum(axis=(1, 2)) + 1e-8)
    brightness = (w * value).sum(axis=(1, 2)) / total
    width = x.shape[3]
    cols = (np.arange(width) + 0.5) / width * 2.0 - 1.0
    x_position = (w * cols[None, None, :]).sum(axis=(1, 2)) / total
    return np.stack([redness, brightness, x_position], axis=1).astype(np.float32)


@dataclass
class FeatureScale:
    """Standardisation of the gold features, measured on rendered images."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, images: np.ndarray) -> FeatureScale:
        f = gold_features(images)
        return cls(f.mean(axis=0), f.std(axis=0) + 1e-6)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return (gold_features(images) - self.mean) / self.std


@dataclass
class SimulatedUser:
    """A user whose reward is ``weights . z(image)`` over the standardised gold features."""

    id: str
    weights: np.ndarray  # (3,), unit length

    def reward(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float64) @ self.weights.astype(np.float64)

    def describe(self) -> str:
        parts = [
            f"{'+' if w >= 0 else '-'}{name}"
            for name, w in zip(FEATURES, self.weights)
            if abs(w) >= 0.35
        ]
        return " ".join(parts) or "mixed"


def in_octant(directions: np.ndarray, octant: Sequence[int]) -> np.ndarray:
    """Which rows of ``directions`` (n, 3) lie in the octant of sign pattern ``octant`` (e.g.
    ``(1, -1, 1)``: more red, darker, further right)."""
    signs = np.asarray(octant)
    if signs.shape != (len(FEATURES),) or not np.isin(signs, (-1, 1)).all():
        raise ValueError(f"an octant is {len(FEATURES)} signs of +1 or -1, got {list(octant)}")
    return (np.sign(directions) == signs[None, :]).all(axis=1)


def simulate_users(
    n: int,
    *,
    rng: np.random.Generator,
    prefix: str = "user",
    opposite_pairs: bool = False,
    exclude_octant: Sequence[int] | None = None,
    within_octant: Sequence[int] | None = None,
) -> list[SimulatedUser]:
    """``n`` users with uniformly random preference directions. With ``opposite_pairs``, users
    come in pairs ``(w, -w)`` (n must be even). ``exclude_octant`` leaves one octant of the
    preference space empty (no user's direction, nor with ``opposite_pairs`` its opposite's, falls
    in it); ``within_octant`` draws every direction inside one (uniformly, by rejection)."""
    if opposite_pairs and n % 2:
        raise ValueError("opposite_pairs needs an even number of users")
    if opposite_pairs and within_octant is not None:
        raise ValueError("opposite users cannot both lie in one octant")
    m = n // 2 if opposite_pairs else n
    constrained = exclude_octant is not None or within_octant is not None
    kept: list[np.ndarray] = []
    while sum(len(k) for k in kept) < m:  # unconstrained: one draw of exactly m
        dirs = rng.normal(size=(max(2 * m, 16) if constrained else m, len(FEATURES)))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        ok = np.ones(len(dirs), dtype=bool)
        if exclude_octant is not None:
            ok &= ~in_octant(dirs, exclude_octant)
            if opposite_pairs:
                ok &= ~in_octant(-dirs, exclude_octant)
        if within_octant is not None:
            ok &= in_octant(dirs, within_octant)
        kept.append(dirs[ok])
    dirs = np.concatenate(kept)[:m]
    if opposite_pairs:
        dirs = np.stack([dirs, -dirs], axis=1).reshape(n, len(FEATURES))
    return [SimulatedUser(f"{prefix}{i}", d.astype(np.float32)) for i, d in enumerate(dirs)]


@dataclass
class PreferencePairs:
    """Labelled pairs over an image pool: ``user[i]`` preferred ``pool[chosen[i]]`` to ``pool[rejected[i]]``."""

    user: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    user_rows: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.user_rows:
            self.user_rows = {int(u): np.nonzero(self.user == u)[0] for u in np.unique(self.user)}

    def __len__(self) -> int:
        return len(self.user)


def label_pairs(
    pool: ShapeImages,
    z: np.ndarray,
    users: list[SimulatedUser],
    pairs_per_user: int,
    *,
    rng: np.random.Generator,
    tau: float = 4.0,
) -> PreferencePairs:
    """``pairs_per_user`` pairs of same-shape pool images for each user, labelled with
    Bradley-Terry noise of inverse temperature ``tau`` on the user's reward (``z``: standardised
    features of the pool)."""
    by_shape = [np.nonzero(pool.shapes == s)[0] for s in range(len(SHAPES))]
    user_idx, chosen, rejected = [], [], []
    for u, user in enumerate(users):
        shape = rng.integers(0, len(SHAPES), pairs_per_user)
        for s in range(len(SHAPES)):
            k = int((shape == s).sum())
            if k == 0:
                continue
            a = rng.choice(by_shape[s], k)
            b = rng.choice(by_shape[s], k)
            b = np.where(
                a == b, by_shape[s][(np.searchsorted(by_shape[s], b) + 1) % len(by_shape[s])], b
            )
            margin = user.reward(z[a]) - user.reward(z[b])
            a_wins = rng.random(k) < 1.0 / (1.0 + np.exp(-tau * margin))
            chosen.append(np.where(a_wins, a, b))
            rejected.append(np.where(a_wins, b, a))
            user_idx.append(np.full(k, u))
    return PreferencePairs(
        np.concatenate(user_idx), np.concatenate(chosen), np.concatenate(rejected)
    )


def linear_probe_r2(
    features: np.ndarray,
    z: np.ndarray,
    test_features: np.ndarray,
    test_z: np.ndarray,
    *,
    ridge: float = 1e-2,
) -> np.ndarray:
    """How much of each standardised gold feature a linear read-out of image embeddings recovers:
    ridge regression fitted on (``features``, ``z``), R^2 on (``test_features``, ``test_z``), one
    value per feature. An evaluation of an encoder after the fact; nothing trains on it."""
    x = np.c_[features, np.ones(len(features))].astype(np.float64)
    xt = np.c_[test_features, np.ones(len(test_features))].astype(np.float64)
    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ np.asarray(z, np.float64))
    resid = ((xt @ w - test_z) ** 2).mean(axis=0)
    return (1.0 - resid / np.asarray(test_z, np.float64).var(axis=0)).astype(np.float32)
