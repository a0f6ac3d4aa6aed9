"""Synthetic preference populations whose right answer is known.

Items are random feature vectors; each user has a true weight vector, and prefers the item with the
higher true reward ``w_u . f`` (with logistic label noise when ``noise`` > 0). With ``groups=2``
and ``opposite=True`` the two groups' weights point in opposite directions, so a model that cannot
tell users apart is at chance on them, and one that can is near perfect.

With ``prompt_weight`` > 0 the prompt matters too: every prompt is about one of two topics (its
features sit on one side or the other of a topic axis), and the true reward gains a term that every
user shares and the topic turns around, ``r_u(x, y) = w_u . y + prompt_weight * t(x) * c . y`` with
``t(x) = sign(x . axis)``. A model that reads the prompt can learn it; one that does not sees noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends.data import PreferenceData


@dataclass
class SyntheticPopulation:
    data: PreferenceData
    true_weights: dict[str, np.ndarray]
    groups: dict[str, int]
    #: ``axis`` splits prompts into two topics; ``prompt_direction`` is ``c`` (module docstring)
    prompt_axis: np.ndarray | None = None
    prompt_direction: np.ndarray | None = None
    prompt_weight: float = 0.0

    def topic(self, prompt: np.ndarray) -> np.ndarray:
        """``t(x)``: +1 or -1 for each row of ``prompt`` (n, prompt_dim); all 0 without a topic axis."""
        prompt = np.atleast_2d(prompt)
        if self.prompt_axis is None:
            return np.zeros(len(prompt), dtype=np.float32)
        return np.where(prompt @ self.prompt_axis >= 0, 1.0, -1.0).astype(np.float32)

    def true_reward(self, user: str, prompt: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The true ``r_u(x, y)`` of each row of ``items`` (n, dim) under ``prompt`` ((prompt_dim,)
        or (n, prompt_dim))."""
        items = np.atleast_2d(items)
        reward = items @ self.true_weights[user]
        if self.prompt_direction is not None:
            topic = self.topic(np.broadcast_to(prompt, (len(items), np.shape(prompt)[-1])))
            reward = reward + self.prompt_weight * topic * (items @ self.prompt_direction)
        return reward.astype(np.float32)


def synthetic_population(
    n_users: int = 20,
    per_user: int = 40,
    dim: int = 8,
    prompt_dim: int = 4,
    *,
    groups: int = 2,
    opposite: bool = True,
    shared_weight: float = 0.0,
    prompt_weight: float = 0.0,
    noise: float = 0.0,
    user_prefix: str = "u",
    seed: int = 0,
) -> SyntheticPopulation:
    """A population of ``n_users`` with ``per_user`` comparisons each (see module docstring).

    ``shared_weight`` adds a direction every user agrees on (so a population model is better
    than chance too); ``prompt_weight`` a term whose sign depends on the prompt's topic (module
    docstring).
    """
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(groups, dim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    if opposite and groups == 2:
        dirs[1] = -dirs[0]
    common = rng.normal(size=dim)
    common /= np.linalg.norm(common)
    pop = SyntheticPopulation(data=None, true_weights={}, groups={})  # type: ignore[arg-type]
    if prompt_weight > 0:
        # drawn after everything else, so that prompt_weight=0 keeps earlier populations as they were
        prompt_rng = np.random.default_rng([seed, 1])
        axis = prompt_rng.normal(size=prompt_dim)
        direction = prompt_rng.normal(size=dim)
        pop.prompt_axis = (axis / np.linalg.norm(axis)).astype(np.float32)
        pop.prompt_direction = (direction / np.linalg.norm(direction)).astype(np.float32)
        pop.prompt_weight = float(prompt_weight)
    ids, idx, prompt, chosen, rejected = [], [], [], [], []
    weights, group_of = pop.true_weights, pop.groups
    for u in range(n_users):
        uid = f"{user_prefix}{u}"
        g = u % groups
        w = 3.0 * (dirs[g] + 0.05 * rng.normal(size=dim)) + shared_weight * common
        group_of[uid] = g
        ids.append(uid)
        a = rng.normal(size=(per_user, dim))
        b = rng.normal(size=(per_user, dim))
        weights[uid] = w.astype(np.float32)
        x = None
        if pop.prompt_axis is not None:
            # two topics, well apart along the axis (the other directions stay noise)
            x = prompt_rng.normal(size=(per_user, prompt_dim))
            side = np.where(prompt_rng.random(per_user) < 0.5, 1.0, -1.0)
            x += (2.0 * side - x @ pop.prompt_axis)[:, None] * pop.prompt_axis
            margin = pop.true_reward(uid, x, a) - pop.true_reward(uid, x, b)
        else:
            margin = (a - b) @ w
        if noise > 0:
            # the label disagrees with the sign of the margin with probability sigma(-|margin|/noise)
            flip = rng.random(per_user) > 1.0 / (1.0 + np.exp(-np.abs(margin) / noise))
            better_a = (margin > 0) ^ flip
        else:
            better_a = margin > 0
        chosen.append(np.where(better_a[:, None], a, b))
        rejected.append(np.where(better_a[:, None], b, a))
        prompt.append(rng.normal(size=(per_user, prompt_dim)) if x is None else x)
        idx.append(np.full(per_user, u))
    n = n_users * per_user
    hashes_c = [f"c{i}" for i in range(n)]
    hashes_r = [f"r{i}" for i in range(n)]
    data = PreferenceData(
        user_ids=ids,
        user_index=np.concatenate(idx),
        prompt=np.concatenate(prompt).astype(np.float32),
        chosen=np.concatenate(chosen).astype(np.float32),
        rejected=np.concatenate(rejected).astype(np.float32),
        chosen_hash=hashes_c,
        rejected_hash=hashes_r,
        feature_names=[f"f{i}" for i in range(dim)],
    )
    pop.data = data
    return pop
