"""The ``pal`` backend: PAL, pluralistic alignment with a mixture of prototypes.

Chen, Chen, Rege, Wang & Vinayak (ICLR 2025). PAL: Sample-Efficient Personalized Reward Modeling
for Pluralistic Alignment. arXiv 2406.08469. Official code: RamyaLab/pluralistic-alignment.

On frozen, standardised features (the official "PAL-Tiny" setting: backbone frozen, projectors
learned), with per-user mixture weights ``w_u = softmax(theta_u)`` over K prototypes:

- **PAL-A** (ideal point): ``r_u(y) = -|f(y) - f(sum_k w_uk p_k)|``, hinge loss (margin 1).
- **PAL-B** (prompt-dependent mixture): ``r_u(x, y) = s * cos(f(y), sum_k w_uk g_k(x))``,
  ``s = min(exp(logit_scale), 100)``, Bradley-Terry (2-way cross-entropy) loss.

Everything is learned jointly through :func:`persona_engine.training.fit_module` with the
official per-group learning rates (projectors, user weights, prototypes, scale). Onboarding a new
user freezes every network and fits only the K mixture logits (``onboarding.py``): by default the
MAP under the population's distribution of mixture weights (a Gaussian over the training users'
centred logits, fitted after ``fit`` and saved with the model, ``user_prior.py``), or the
published fit of the shots alone (``onboarding="published"``).

Added to the published method: a **prototype-diversity penalty** ``lambda * mean_{k<l}
relu(cos(q_k, q_l))^2`` (``loss.prototype_diversity_penalty``) on the prototypes in the preference
space they live in (A: ``p_k`` in the standardised item space, centred at 0; B: ``g_k(x)`` for
each prompt of the batch). The official code has nothing that keeps prototypes apart; ``prototype_diversity=0``
gives the published objective. ``fit`` reports the prototypes' mean and largest pairwise cosine.
Other deviations: the official token-wise losses become one term per comparison (one feature
vector per text), MAP onboarding by default, and the published onboarding starts at the centre of
the simplex with a tiny L2.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from persona_engine.backends import PreferenceData, RewardBackend, UserState
from persona_engine.backends.scaling import Standardizer
from persona_engine.backends.user_prior import LogitPrior, onboard_prior_scale
from persona_engine.errors import InvalidInputError
from persona_engine.losses import preference_targets
from persona_engine.training import fit_module

from .config import PALConfig
from .inference import NumpyProjector, distinct_rows, softmax, unit_rows
from .onboarding import fit_mixture_logits, ideal_point_logits, prompt_mixture_logits

CHUNK = 8192  # rows per block when gathering per-row prompt points


def _column_standardizer(x: np.ndarray) -> Standardizer:
    std = x.std(axis=0)
    return Standardizer(x.mean(axis=0), np.where(std < 1e-6, 1.0, std))


class PALBackend(RewardBackend):
    name = "pal"
    #: variant B (the default) mixes the prototypes by prompt; variant A does not.
    reads_prompt = True
    Config = PALConfig
    config: PALConfig
    #: options for the conformance suite (persona_engine.testing): the defaults are fast enough
    conformance_config: ClassVar[dict[str, Any]] = {}

    @property
    def vector_dim(self) -> int:
        return self.config.n_prototypes

    # -- training ------------------------------------------------------------------------------
    def _fit(self, data: PreferenceData, *, progress: bool) -> dict[str, Any]:
        import torch

        from .loss import preference_loss, prototype_diversity_penalty
        from .model import IdealPointModel, Projector, PromptMixtureModel

        cfg, variant = self.config, self.config.variant
        if cfg.residual and (
            data.dim != cfg.pref_dim or (variant == "B" and data.prompt_dim != cfg.pref_dim)
        ):
            raise InvalidInputError(
                f"pal: residual projectors need pref_dim ({cfg.pref_dim}) equal to the feature dimension ({data.dim})"
            )
        self.scaler = Standardizer.fit(data)
        self.prompt_scaler = _column_standardizer(data.prompt)
        chosen = torch.from_numpy(self.scaler(data.chosen))
        rejected = torch.from_numpy(self.scaler(data.rejected))
        users = torch.from_numpy(data.user_index)
        target = torch.from_numpy(preference_targets(data.strength))
        kind, margin, lam = cfg.resolved_loss(), cfg.hinge_margin, cfg.prototype_diversity

        torch.manual_seed(cfg.training.seed)

        def projector(in_dim: int) -> Projector:
            return Projector(
                in_dim, cfg.pref_dim, cfg.hidden_layers, cfg.resolved_activation(), cfg.residual
            )

        tc = cfg.training
        if variant == "A":
            model: Any = IdealPointModel(
                data.dim, data.n_users, cfg.n_prototypes, projector(data.dim)
            )
            groups = [
                {
                    "params": list(model.item_map.parameters()),
                    "lr": tc.lr,
                    "weight_decay": tc.weight_decay,
                },
                {"params": [model.prototypes], "lr": cfg.prototype_lr, "weight_decay": 0.0},
            ]

            def batch_loss(rows: np.ndarray, epoch: int, diversity: bool) -> torch.Tensor:
                idx = torch.from_numpy(rows)
                loss = preference_loss(
                    model(chosen[idx], rejected[idx], users[idx]), target[idx], kind, margin
                )
                if diversity and lam > 0:
                    # the prototypes live in the standardised item space, centred at 0
                    loss = loss + lam * prototype_diversity_penalty(model.prototypes)
                return loss

        else:
            model = PromptMixtureModel(
                data.n_users,
                projector(data.dim),
                [projector(data.prompt_dim) for _ in range(cfg.n_prototypes)],
                cfg.logit_scale_init,
                cfg.logit_scale_max,
            )
            groups = [
                {
                    "params": list(model.item_map.parameters())
                    + list(model.prompt_maps.parameters()),
                    "lr": tc.lr,
                    "weight_decay": tc.weight_decay,
                },
                {"params": [model.logit_scale], "lr": cfg.logit_scale_lr, "weight_decay": 0.0},
            ]
            prompts = torch.from_numpy(self.prompt_scaler(data.prompt))
            prompt_first, prompt_id = distinct_rows(data.prompt)

            def batch_loss(rows: np.ndarray, epoch: int, diversity: bool) -> torch.Tensor:
                idx = torch.from_numpy(rows)
                uniq, inverse = np.unique(prompt_id[rows], return_inverse=True)
                points = model.prompt_points(prompts[torch.from_numpy(prompt_first[uniq])])
                logits = model(
                    points[torch.from_numpy(inverse.ravel())],
                    chosen[idx],
                    rejected[idx],
                    model.user_weights(users[idx]),
                )
                loss = preference_loss(logits, target[idx], kind, margin)
                if diversity and lam > 0:
                    loss = loss + lam * prototype_diversity_penalty(points)
                return loss

        groups.append({"params": [model.user_logits], "lr": cfg.user_lr, "weight_decay": 0.0})
        result = fit_module(
            model,
            lambda rows, epoch: batch_loss(rows, epoch, True),
            len(data),
            tc,
            groups=data.user_index,
            params=groups,
            desc=f"pal-{variant}",
            progress=progress,
            eval_loss_fn=lambda rows: batch_loss(rows, 0, False),
        )
        self._set_networks(
            {
                k: v.detach().numpy().copy()
                for k, v in model.state_dict().items()
                if k != "user_logits"
            }
        )
        with torch.no_grad():
            w = model.user_weights().numpy().astype(np.float32)
        self.users = {u: self._state(w[i]) for i, u in enumerate(data.user_ids)}
        base = LogitPrior.fit(w)
        scale, scale_metrics = onboard_prior_scale(self, data, tc.seed)
        self.user_prior = base.scaled(scale)
        cos = self.prototype_cosines(data)
        off = cos[~np.eye(len(cos), dtype=bool)]
        metrics = {
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "train_loss": result.train_loss,
            "val_loss": result.val_loss,
            "prototype_cos_mean": float(off.mean()) if off.size else 0.0,
            "prototype_cos_max": float(off.max()) if off.size else 0.0,
            "user_logit_std": base.logit_std(),
            **scale_metrics,
        }
        if variant == "B":
            metrics["cosine_scale"] = self._scale
        return metrics

    def _set_networks(self, state: dict[str, np.ndarray]) -> None:
        """Keep the trained weights as numpy projectors (scoring and onboarding need no torch)."""
        cfg = self.config
        self._networks = {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}
        act = cfg.resolved_activation()
        self.item_map = NumpyProjector.from_state(self._networks, "item_map.", act, cfg.residual)
        # for scoring: the item map reading raw features (standardisation folded into layer 1)
        self._raw_item_map = (
            None
            if cfg.residual
            else self.item_map.reading_raw_features(self.scaler.mean, self.scaler.std)
        )
        if cfg.variant == "A":
            self.prototypes = self._networks["prototypes"]
        else:
            self.prompt_maps = [
                NumpyProjector.from_state(self._networks, f"prompt_maps.{k}.", act, cfg.residual)
                for k in range(cfg.n_prototypes)
            ]
            self._scale = min(float(np.exp(self._networks["logit_scale"])), cfg.logit_scale_max)

    def _state(self, w: np.ndarray) -> UserState:
        w = np.asarray(w, dtype=np.float32)
        return UserState(vector=w, weights={f"prototype_{k}": float(v) for k, v in enumerate(w)})

    def _prompt_points(self, prompts: np.ndarray) -> np.ndarray:
        """g_k(x) of standardised prompts: (n, K, d_pref)."""
        return np.stack([g(prompts) for g in self.prompt_maps], axis=1)

    def prototype_cosines(self, data: PreferenceData, max_prompts: int = 256) -> np.ndarray:
        """Mean pairwise cosine (K x K) of the prototypes: A's p_k in the standardised item space
        (centred at 0), B's g_k(x) over (up to ``max_prompts``) of ``data``'s distinct prompts.
        Off-diagonal values near 1 are collapsed prototypes."""
        if self.config.variant == "A":
            points = self.prototypes[None]
        else:
            first, _ = distinct_rows(data.prompt)
            points = self._prompt_points(self.prompt_scaler(data.prompt[first[:max_prompts]]))
        unit = unit_rows(points)
        return np.einsum("pkd,pld->kl", unit, unit) / len(unit)

    # -- onboarding and scoring -------------------------------------------------------------------
    def onboarding_problem(self, data: PreferenceData) -> tuple[Any, np.ndarray]:
        """``(logits_fn, target)``: theta -> (r_c - r_r for each comparison, its Jacobian), with
        every network frozen, and the preference targets, for one user's comparisons."""
        chosen, rejected = self.scaler(data.chosen), self.scaler(data.rejected)
        if self.config.variant == "A":
            logits_fn = ideal_point_logits(self.item_map, self.prototypes, chosen, rejected)
        else:
            first, inverse = distinct_rows(data.prompt)
            points = self._prompt_points(self.prompt_scaler(data.prompt[first]))[inverse]
            logits_fn = prompt_mixture_logits(
                points,
                unit_rows(self.item_map(chosen)),
                unit_rows(self.item_map(rejected)),
                self._scale,
            )
        return logits_fn, preference_targets(data.strength)

    def _embed_user(self, data: PreferenceData) -> UserState:
        prior = self.user_prior if self.config.onboarding == "map" else None
        return self._state(softmax(self._onboard_logits(data, prior)))

    def _onboard_logits(self, data: PreferenceData, prior: LogitPrior | None) -> np.ndarray:
        """A new user's mixture logits with every network frozen: the MAP under ``prior``, or
        without one the published fit of the shots (plus ``onboard_l2``) from the centre."""
        cfg = self.config
        logits_fn, target = self.onboarding_problem(data)
        k = cfg.n_prototypes
        if prior is not None:
            mean, precision = prior.mean, prior.precision / len(data)
            start: np.ndarray | None = mean
        else:
            mean, precision, start = np.zeros(k), cfg.onboard_l2 * np.eye(k), None
        return fit_mixture_logits(
            logits_fn,
            k,
            target,
            kind=cfg.resolved_loss(),
            prior_mean=mean,
            prior_precision=precision,
            start=start,
            margin=cfg.hinge_margin,
            sharpness=cfg.onboard_hinge_sharpness,
            max_iter=cfg.onboard_max_iter,
        )

    def prior(self) -> UserState:
        """The population's typical mixture: ``softmax`` of the onboarding prior's mean (what MAP
        onboarding returns before any comparison)."""
        self.check_fitted()
        return self._state(softmax(self.user_prior.mean))

    def _reward(self, vectors: np.ndarray, prompt: np.ndarray, items: np.ndarray) -> np.ndarray:
        points_y = (
            self._raw_item_map(items) if self._raw_item_map else self.item_map(self.scaler(items))
        )
        if self.config.variant == "A":
            first, inverse = distinct_rows(vectors)
            ideal = self.item_map(vectors[first] @ self.prototypes)
            return -np.linalg.norm(points_y - ideal[inverse], axis=1)
        unit_y = unit_rows(points_y)
        first, inverse = distinct_rows(prompt)
        points = self._prompt_points(self.prompt_scaler(prompt[first]))  # (U, K, d)
        gram = np.einsum("ukd,uld->ukl", points, points)
        if len(first) == 1:
            dots = unit_y @ points[0].T
            norm_sq = np.einsum("mk,kl,ml->m", vectors, gram[0], vectors)
        else:
            dots = np.empty((len(items), points.shape[1]), dtype=np.float32)
            for s in range(0, len(items), CHUNK):
                dots[s : s + CHUNK] = np.einsum(
                    "md,mkd->mk", unit_y[s : s + CHUNK], points[inverse[s : s + CHUNK]]
                )
            norm_sq = np.einsum("mk,mkl,ml->m", vectors, gram[inverse], vectors)
        return self._scale * (dots * vectors).sum(1) / np.sqrt(np.maximum(norm_sq, 1e-24))

    # -- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            **self._networks,
            **self.scaler.state(),
            **self.prompt_scaler.state("prompt_scaler"),
            **self.user_prior.state(),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.scaler = Standardizer.from_state(state)
        self.prompt_scaler = Standardizer.from_state(state, "prompt_scaler")
        self.user_prior = LogitPrior.from_state(state)
        self._set_networks(
            {
                k: v
                for k, v in state.items()
                if not k.startswith(("scaler.", "prompt_scaler.", "user_prior."))
            }
        )
