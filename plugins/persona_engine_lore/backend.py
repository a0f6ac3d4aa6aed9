"""The ``lore`` backend: LoRe, low-rank personalized reward modeling on frozen features.

Bose, Xiong, Chi, Du, Xiao & Fazel (2025). LoRe: Personalizing LLMs via Low-Rank Reward
Modeling. arXiv 2504.14439 (COLM 2025). Official code: facebookresearch/LoRe.

Model: features are standardised on the training items, ``e = standardise(f(y))``; a shared basis
``V`` (d x B) spans B reward directions and user ``u`` weighs them with ``w_u = softmax(theta_u)``
on the simplex, ``r_u(y) = e^T V w_u``, with the Bradley-Terry likelihood
``P(y_c > y_r | u) = sigma((e_c - e_r)^T V w_u / tau)`` and the official temperature ``tau = 100``.

Training is the official joint objective (Adam on V and every theta at once, each user's
comparisons averaged first so users count equally), through the shared loop
:func:`persona_engine.training.fit_module` (mini-batches, validation split, early stopping).
Onboarding freezes V and fits the B logits of the new user by Newton's method (``onboarding.py``):
by default the MAP under the population's distribution of user weights (a Gaussian over the
training users' centred logits, fitted after ``fit`` and saved with the model, ``user_prior.py``),
or the published maximum-likelihood fit (``onboarding="published"``).
``rank=1`` is a plain linear Bradley-Terry head shared by all users (the official "K = 1" model).

Deviations from the official code, all deliberate: MAP onboarding by default (above); in the
published procedure the theta of a new user starts at 0 rather than a random draw, and a tiny L2
penalty (``onboard_l2``) keeps it finite when a handful of comparisons are separable; the "reference head" regulariser (alpha, 0 in the Reddit and
PersonalLLM runs, and built on the wrong head in the official code) is not implemented.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from persona_engine.backends import PreferenceData, RewardBackend, UserState
from persona_engine.backends.scaling import Standardizer
from persona_engine.backends.user_prior import LogitPrior, onboard_prior_scale
from persona_engine.losses import preference_targets
from persona_engine.training import fit_module

from .config import LoReConfig
from .onboarding import fit_user_logits, softmax


class LoReBackend(RewardBackend):
    name = "lore"
    Config = LoReConfig
    config: LoReConfig
    #: options for the conformance suite (persona_engine.testing): the defaults are fast enough
    conformance_config: ClassVar[dict[str, Any]] = {}

    @property
    def vector_dim(self) -> int:
        return self.config.rank

    # -- training ------------------------------------------------------------------------------
    def _fit(self, data: PreferenceData, *, progress: bool) -> dict[str, Any]:
        import torch

        from .loss import joint_loss
        from .model import LowRankReward

        cfg = self.config
        self.scaler = Standardizer.fit(data)
        diff = torch.from_numpy((data.chosen - data.rejected) / self.scaler.std)
        users = torch.from_numpy(data.user_index)
        target = torch.from_numpy(preference_targets(data.strength))
        counts = np.bincount(data.user_index, minlength=data.n_users).astype(np.float32)
        weight = torch.from_numpy(
            1.0 / counts[data.user_index]
            if cfg.equal_user_weight
            else np.ones(len(data), np.float32)
        )

        torch.manual_seed(cfg.training.seed)
        model = LowRankReward(data.dim, cfg.rank, data.n_users, cfg.temperature)

        def loss(rows: np.ndarray, epoch: int) -> torch.Tensor:
            idx = torch.from_numpy(rows)
            return joint_loss(model(diff[idx], users[idx]), target[idx], weight[idx])

        result = fit_module(
            model,
            loss,
            len(data),
            cfg.training,
            groups=data.user_index,
            desc="lore",
            progress=progress,
        )
        self._set_basis(model.basis.detach().numpy())
        with torch.no_grad():
            w = model.user_weights().numpy().astype(np.float32)
        self.users = {u: self._state(w[i]) for i, u in enumerate(data.user_ids)}
        base = LogitPrior.fit(w)
        scale, scale_metrics = onboard_prior_scale(self, data, cfg.training.seed)
        self.user_prior = base.scaled(scale)
        return {
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "train_loss": result.train_loss,
            "val_loss": result.val_loss,
            # the official pruning rule: a direction counts if some user gives it >= 1% weight
            "basis_used": int((w.max(axis=0) >= 1e-2).sum()),
            # spread of the training users' centred logits, and the chosen scale of the onboarding prior
            "user_logit_std": base.logit_std(),
            **scale_metrics,
        }

    def _set_basis(self, basis: np.ndarray) -> None:
        """Keep V and its standardisation folded in, so scoring is one matmul: r = x V' + b."""
        self.basis = np.asarray(basis, dtype=np.float32)
        tau = self.config.temperature
        self._scoring_basis = (self.basis / self.scaler.std[:, None] / tau).astype(np.float32)
        self._scoring_offset = (-(self.scaler.mean / self.scaler.std) @ self.basis / tau).astype(
            np.float32
        )

    def _state(self, w: np.ndarray) -> UserState:
        w = np.asarray(w, dtype=np.float32)
        return UserState(vector=w, weights={f"basis_{j}": float(v) for j, v in enumerate(w)})

    # -- onboarding and scoring -------------------------------------------------------------------
    def _embed_user(self, data: PreferenceData) -> UserState:
        prior = self.user_prior if self.config.onboarding == "map" else None
        return self._state(softmax(self._onboard_logits(data, prior)))

    def _onboard_logits(self, data: PreferenceData, prior: LogitPrior | None) -> np.ndarray:
        """A new user's logits theta with V frozen: the MAP under ``prior``, or without one the
        published maximum-likelihood fit (plus ``onboard_l2``) from the centre of the simplex."""
        cfg = self.config
        projected = ((data.chosen - data.rejected) / self.scaler.std) @ self.basis / cfg.temperature
        if prior is not None:
            mean, precision = prior.mean, prior.precision / len(data)
            start: np.ndarray | None = mean
        else:
            mean, precision = np.zeros(cfg.rank), cfg.onboard_l2 * np.eye(cfg.rank)
            start = None
        return fit_user_logits(
            projected,
            preference_targets(data.strength),
            prior_mean=mean,
            prior_precision=precision,
            max_iter=cfg.onboard_max_iter,
            start=start,
        )

    def prior(self) -> UserState:
        """The population's typical weights: ``softmax`` of the onboarding prior's mean (what MAP
        onboarding returns before any comparison)."""
        self.check_fitted()
        return self._state(softmax(self.user_prior.mean))

    def _reward(self, vectors: np.ndarray, prompt: np.ndarray, items: np.ndarray) -> np.ndarray:
        per_direction = items @ self._scoring_basis + self._scoring_offset  # (m, B)
        return np.einsum("ij,ij->i", per_direction, vectors)

    # -- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return {"basis": self.basis, **self.scaler.state(), **self.user_prior.state()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.scaler = Standardizer.from_state(state)
        self.user_prior = LogitPrior.from_state(state)
        self._set_basis(state["basis"])
