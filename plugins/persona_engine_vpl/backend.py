"""The ``vpl`` backend: VPL, variational preference learning with a latent user variable.

Poddar, Wan, Ivison, Gupta & Jaques (NeurIPS 2024). Personalizing Reinforcement Learning from
Human Feedback with Variational Preference Learning. arXiv 2408.10075. Official code:
WEIRDLabUW/vpl_llm.

On frozen, standardised features: each comparison of a user's context set C is embedded by an MLP
on ``[e(y_c); e(y_r); e(x)]``, a single-head self-attention layer mixes the set and a mean-pool
makes it permutation-invariant; linear heads give ``q(z | C) = N(mu, diag sigma^2)``. The reward
``r(x, y, z)`` is an MLP on ``[e(y); e(x); z]``. Training maximises the ELBO (Bradley-Terry
likelihood under one reparameterised sample + beta * KL, with the official cyclical cosine
annealing of beta), each comparison decoded under a fresh random context of its user's other
training comparisons (``contexts.py``), through :func:`persona_engine.training.fit_module`.

There are no per-user parameters: onboarding is one encoder pass over the user's comparisons, no
optimisation, and returns ``UserState(vector=mu, uncertainty=sigma^2)``.

Fixes to the official code, by design:

- **Same latent path at train and eval.** Training decodes ``z = sqrt(D) normalize(mu + sigma eps)``;
  the official evaluation decodes the raw clamped ``mu`` (a vector of norm <= sqrt(D), never seen in
  training). Here inference decodes ``sqrt(D) normalize(mu)``: the posterior mean on the same sphere.
- **Posterior collapse is measured where it happens, in the reward.** ``fit`` reports
  ``swap_sensitivity`` (``collapse.py``): the mean absolute change of the reward margin of a
  user's held-out comparisons when their latent (from their training comparisons) is swapped for
  another user's; 0 means the decoder ignores z and every user gets the same reward. The share of
  active latent units (a unit is active when its posterior mean varies across users by more than
  0.01; Burda et al. 2016) and the mean KL are reported too, but they describe the encoder only:
  a collapsed decoder can sit behind 100% active units.
- **Collapse is fought, not only measured** (see ``VPLConfig`` and its presets): training
  contexts of 1-32 comparisons drawn log-uniformly cover the sizes users are onboarded from
  (the official 2-8 do not, and onboarding reads at most ``context_max``). A context-swap
  regulariser (``loss.swap_loss``, ``swap_weight``), which rewards margins that the user's own z
  explains better than another user's z, is available but off by default: on the dev bench it
  raised ``swap_sensitivity`` without raising accuracy.
- The log-variance floor is -6 rather than the official -1 (sigma >= 0.6 on a mean clamped to
  [-1, 1] drowns the latent in noise; the official code works around it by scaling eps by 1e-3).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from persona_engine.backends import PreferenceData, RewardBackend, UserState
from persona_engine.backends.scaling import Standardizer
from persona_engine.losses import preference_targets
from persona_engine.training import fit_module, split_indices

from .collapse import swap_sensitivity
from .config import VPLConfig
from .contexts import ContextSampler

ENCODE_USERS_PER_BATCH = 64


def _column_standardizer(x: np.ndarray) -> Standardizer:
    std = x.std(axis=0)
    return Standardizer(x.mean(axis=0), np.where(std < 1e-6, 1.0, std))


def _leaky_relu(x: np.ndarray) -> np.ndarray:
    """LeakyReLU(0.2), in place: max(x, 0.2 x)."""
    return np.maximum(x, np.float32(0.2) * x, out=x)


def _one_row(x: np.ndarray) -> bool:
    """True when every row of ``x`` is the same (a broadcast, or one prompt repeated)."""
    if len(x) <= 1 or x.strides[0] == 0:
        return True
    return bool(np.array_equal(x[-1], x[0]) and (x == x[0]).all())


class VPLBackend(RewardBackend):
    name = "vpl"
    #: the pair encoder and the reward read the prompt by default (use_prompt=false: they do not).
    reads_prompt = True
    Config = VPLConfig
    config: VPLConfig
    #: options for the conformance suite (persona_engine.testing): the defaults are fast enough
    conformance_config: ClassVar[dict[str, Any]] = {}

    @property
    def vector_dim(self) -> int:
        return self.config.latent_dim

    # -- features ------------------------------------------------------------------------------
    def _inputs(self, data: PreferenceData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Standardised (chosen, rejected, prompt) features; prompt has 0 columns without use_prompt."""
        prompt = (
            self.prompt_scaler(data.prompt)
            if self.config.use_prompt
            else np.zeros((len(data), 0), np.float32)
        )
        return self.scaler(data.chosen), self.scaler(data.rejected), prompt

    def _build_model(self) -> Any:
        from .model import VariationalPreferenceModel

        cfg = self.config
        assert self.dim is not None and self.prompt_dim is not None
        dp = self.prompt_dim if cfg.use_prompt else 0
        return VariationalPreferenceModel(
            pair_dim=2 * self.dim + dp,
            input_dim=self.dim + dp,
            hidden_dim=cfg.hidden_dim,
            latent_dim=cfg.latent_dim,
            mean_clamp=cfg.mean_clamp,
            log_var_range=(cfg.log_var_min, cfg.log_var_max),
        )

    # -- training ------------------------------------------------------------------------------
    def _fit(self, data: PreferenceData, *, progress: bool) -> dict[str, Any]:
        import torch

        from .loss import comparison_nll, elbo_loss, gaussian_kl, kl_anneal_factor, swap_loss

        cfg, tc = self.config, self.config.training
        self.scaler = Standardizer.fit(data)
        self.prompt_scaler = _column_standardizer(data.prompt)
        chosen, rejected, prompt = (torch.from_numpy(a) for a in self._inputs(data))
        pairs = torch.cat([chosen, rejected, prompt], dim=1)
        chosen_in, rejected_in = (
            torch.cat([chosen, prompt], dim=1),
            torch.cat([rejected, prompt], dim=1),
        )
        target = torch.from_numpy(preference_targets(data.strength))
        # the same split fit_module makes, so contexts are drawn from training rows only
        train_rows, val_rows = split_indices(len(data), tc.val_fraction, tc.seed, data.user_index)
        sampler = ContextSampler(data.user_index, train_rows, data.n_users)

        torch.manual_seed(tc.seed)
        model = self._build_model()
        rng = np.random.default_rng(tc.seed + 2)
        step = [0]

        def margins(rows: np.ndarray, z: torch.Tensor) -> torch.Tensor:
            idx = torch.from_numpy(rows)
            return model.decoder(chosen_in[idx], z) - model.decoder(rejected_in[idx], z)

        def logits_under(
            rows: np.ndarray, generator: np.random.Generator, sample: bool
        ) -> tuple[Any, Any, Any, Any]:
            context, mask = sampler.sample(
                rows, generator, cfg.context_min, cfg.context_max, cfg.context_distribution
            )
            mean, log_var = model.posterior(
                pairs[torch.from_numpy(context)], torch.from_numpy(mask)
            )
            z = model.latent(mean, log_var if sample else None)
            return margins(rows, z), mean, log_var, z

        def train_loss(rows: np.ndarray, epoch: int) -> torch.Tensor:
            logits, mean, log_var, z = logits_under(rows, rng, sample=True)
            beta = cfg.kl_weight * (
                kl_anneal_factor(step[0], cfg.kl_anneal_period, cfg.kl_anneal_floor)
                if cfg.kl_anneal
                else 1.0
            )
            step[0] += 1
            t = target[torch.from_numpy(rows)]
            loss = elbo_loss(logits, t, gaussian_kl(mean, log_var), beta)
            if cfg.swap_weight > 0:
                # each row decoded under the latent of another user's row of the batch
                partner = rng.permutation(len(rows))
                other = data.user_index[rows[partner]] != data.user_index[rows]
                if other.any():
                    keep = torch.from_numpy(np.nonzero(other)[0])
                    own = comparison_nll(logits[keep], t[keep])
                    swapped = comparison_nll(
                        margins(rows[keep.numpy()], z[torch.from_numpy(partner)][keep]), t[keep]
                    )
                    loss = loss + cfg.swap_weight * swap_loss(own, swapped)
            return loss

        def val_loss(rows: np.ndarray) -> torch.Tensor:
            # the inference path: fixed contexts, z from the posterior mean, likelihood only
            logits, _, _, _ = logits_under(rows, np.random.default_rng(tc.seed + 3), sample=False)
            return elbo_loss(logits, target[torch.from_numpy(rows)], logits.new_zeros(1), 0.0)

        result = fit_module(
            model,
            train_loss,
            len(data),
            tc,
            groups=data.user_index,
            desc="vpl",
            progress=progress,
            eval_loss_fn=val_loss,
        )
        self._set_model(model)
        self.users = self._encode_users(data)
        means = np.stack([s.vector for s in self.users.values()])
        variances = np.stack([s.uncertainty for s in self.users.values()])  # type: ignore[misc]
        kl = 0.5 * (means**2 + variances - 1.0 - np.log(variances)).sum(1)
        swap, swap_relative, swap_on = self._swap_sensitivity(data, train_rows, val_rows)
        return {
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "train_loss": result.train_loss,
            "val_loss": result.val_loss,
            "active_units": self.active_unit_share(means),
            "kl_mean": float(kl.mean()),
            "swap_sensitivity": swap,
            "swap_sensitivity_relative": swap_relative,
            "swap_sensitivity_on": swap_on,
        }

    def _swap_sensitivity(
        self, data: PreferenceData, train_rows: np.ndarray, val_rows: np.ndarray
    ) -> tuple[float, float, str]:
        """Swap sensitivity (``collapse.py``) of the training population: each user's latent from
        their training rows, their margins on their validation rows (on their training rows when
        there are none: then the figure says "train")."""
        held_out = len(val_rows) > 0
        states = self._encode_users(data.subset(train_rows))
        scored = data.subset(val_rows if held_out else train_rows)
        by_user = {u: scored.subset(r) for u, r in scored.rows_of_users().items()}
        swap, relative = swap_sensitivity(
            self._margins, states, by_user, seed=self.config.training.seed
        )
        return swap, relative, "validation" if held_out else "train"

    def _margins(self, state: UserState, data: PreferenceData) -> np.ndarray:
        """``r(chosen) - r(rejected)`` of ``data`` under one user's latent (no fitted check: used
        inside ``fit``)."""
        z = np.broadcast_to(state.vector.astype(np.float32), (len(data), self.vector_dim))
        return self._reward(z, data.prompt, data.chosen) - self._reward(
            z, data.prompt, data.rejected
        )

    def active_unit_share(self, means: np.ndarray) -> float:
        """Share of latent units whose posterior mean varies across users (Burda et al. 2016):
        ``Var_u(mu_u,d) > threshold``. Near 0 is posterior collapse (z carries nothing)."""
        if len(means) < 2:
            return 0.0
        return float((means.var(axis=0) > self.config.active_unit_threshold).mean())

    def _set_model(self, model: Any) -> None:
        """Keep the torch encoder (onboarding) and the decoder as numpy weights (scoring)."""
        self.model = model.eval()
        layers = [m for m in model.decoder.mlp if hasattr(m, "weight")]
        (w1, b1), (w2, b2), (w3, b3) = (
            (
                m.weight.detach().numpy().astype(np.float32),
                m.bias.detach().numpy().astype(np.float32),
            )
            for m in layers
        )
        d = self.dim
        assert d is not None
        dp = (self.prompt_dim or 0) if self.config.use_prompt else 0
        w_item, w_prompt, w_latent = w1[:, :d], w1[:, d : d + dp], w1[:, d + dp :]
        # fold the standardisation into the first layer: W ((x - m) / s) = (W / s) x - W (m / s)
        self._w_item = (w_item / self.scaler.std).T.astype(np.float32)
        bias = b1 - w_item @ (self.scaler.mean / self.scaler.std)
        if dp:
            self._w_prompt = (w_prompt / self.prompt_scaler.std).T.astype(np.float32)
            bias = bias - w_prompt @ (self.prompt_scaler.mean / self.prompt_scaler.std)
        self._b1 = bias.astype(np.float32)
        self._w_latent = np.ascontiguousarray(w_latent.T)
        self._w2, self._b2, self._w3, self._b3 = np.ascontiguousarray(w2.T), b2, w3[0], float(b3[0])

    # -- onboarding ---------------------------------------------------------------------------------
    def _posteriors(
        self, groups: list[np.ndarray], pairs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma^2) of q(z | C) for each group of rows of ``pairs`` (one encoder pass per chunk)."""
        import torch

        size = max(len(g) for g in groups)
        context = np.zeros((len(groups), size), dtype=np.int64)
        mask = np.zeros((len(groups), size), dtype=bool)
        for i, g in enumerate(groups):
            context[i, : len(g)], mask[i, : len(g)] = g, True
        with torch.no_grad():
            mean, log_var = self.model.posterior(
                torch.from_numpy(pairs[context]), torch.from_numpy(mask)
            )
        return mean.numpy().astype(np.float32), np.exp(log_var.numpy()).astype(np.float32)

    def _context_rows(self, rows: np.ndarray) -> np.ndarray:
        cfg = self.config
        cap = cfg.onboard_context_max or cfg.context_max
        if len(rows) <= cap:
            return rows
        return np.sort(
            np.random.default_rng(self.config.training.seed).choice(rows, cap, replace=False)
        )

    def _encode_users(self, data: PreferenceData) -> dict[str, UserState]:
        chosen, rejected, prompt = self._inputs(data)
        pairs = np.concatenate([chosen, rejected, prompt], axis=1)
        by_user = data.rows_of_users()
        ids = sorted(by_user, key=lambda u: len(by_user[u]))  # similar sizes share a padded batch
        states: dict[str, UserState] = {}
        for s in range(0, len(ids), ENCODE_USERS_PER_BATCH):
            chunk = ids[s : s + ENCODE_USERS_PER_BATCH]
            mean, var = self._posteriors([self._context_rows(by_user[u]) for u in chunk], pairs)
            states.update(
                {u: UserState(vector=mean[i], uncertainty=var[i]) for i, u in enumerate(chunk)}
            )
        return {u: states[u] for u in data.user_ids}

    def _embed_user(self, data: PreferenceData) -> UserState:
        chosen, rejected, prompt = self._inputs(data)
        pairs = np.concatenate([chosen, rejected, prompt], axis=1)
        mean, var = self._posteriors([self._context_rows(np.arange(len(data)))], pairs)
        return UserState(vector=mean[0], uncertainty=var[0])

    def prior(self) -> UserState:
        """The most typical training user (posterior mean closest to the population's average),
        with the spread of the population plus the average posterior variance as uncertainty."""
        self.check_fitted()
        if not self.users:
            return UserState(
                vector=np.zeros(self.vector_dim, np.float32),
                uncertainty=np.ones(self.vector_dim, np.float32),
            )
        means = np.stack([s.vector for s in self.users.values()])
        variances = np.stack(
            [
                s.uncertainty
                if s.uncertainty is not None
                else np.zeros(self.vector_dim, np.float32)
                for s in self.users.values()
            ]
        )
        medoid = means[np.argmin(((means - means.mean(0)) ** 2).sum(1))]
        return UserState(
            vector=medoid.astype(np.float32),
            uncertainty=(means.var(0) + variances.mean(0)).astype(np.float32),
        )

    # -- scoring -----------------------------------------------------------------------------------
    def _reward(self, vectors: np.ndarray, prompt: np.ndarray, items: np.ndarray) -> np.ndarray:
        d_latent = self.config.latent_dim
        z_rows = vectors[:1] if _one_row(vectors) else vectors
        z = (
            np.sqrt(d_latent)
            * z_rows
            / np.maximum(np.linalg.norm(z_rows, axis=1, keepdims=True), 1e-12)
        )
        hidden = items @ self._w_item + self._b1 + z @ self._w_latent
        if self.config.use_prompt:
            hidden += (prompt[:1] if _one_row(prompt) else prompt) @ self._w_prompt
        hidden = _leaky_relu(hidden)
        hidden = _leaky_relu(hidden @ self._w2 + self._b2)
        return hidden @ self._w3 + self._b3

    # -- persistence -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"model.{k}": v.detach().numpy() for k, v in self.model.state_dict().items()}
        return {**state, **self.scaler.state(), **self.prompt_scaler.state("prompt_scaler")}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        import torch

        self.scaler = Standardizer.from_state(state)
        self.prompt_scaler = Standardizer.from_state(state, "prompt_scaler")
        model = self._build_model()
        model.load_state_dict(
            {
                k[len("model.") :]: torch.from_numpy(np.array(v))
                for k, v in state.items()
                if k.startswith("model.")
            }
        )
        self._set_model(model)
