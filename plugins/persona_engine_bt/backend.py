"""Bradley-Terry reward head on frozen features.

``r(x, y) = MLP(standardise(f(y)))`` (a linear head by default), trained on
``P(y_c > y_r) = sigma(r(x, y_c) - r(x, y_r))`` over all users pooled. It has no per-user state:
every user gets the same scores, which is the baseline every personalized backend is compared to.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from persona_engine.backends import PreferenceData, RewardBackend, UserState
from persona_engine.backends.scaling import Standardizer
from persona_engine.config import PluginConfig, TrainingConfig
from persona_engine.losses import bradley_terry_loss, preference_targets
from persona_engine.training import fit_module, resolve_device


class BradleyTerryConfig(PluginConfig):
    hidden: int = Field(
        0, ge=0, description="Hidden units of the reward head; 0 for a linear head."
    )
    training: TrainingConfig = Field(
        default_factory=lambda: TrainingConfig(lr=1e-2, weight_decay=1e-2, epochs=300, patience=15),
        description="Options of the shared training loop.",
    )


def _head(d: int, hidden: int) -> Any:
    import torch.nn as nn

    if hidden:
        return nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, 1))
    return nn.Sequential(nn.Linear(d, 1))


class BradleyTerryBackend(RewardBackend):
    name = "bt"
    Config = BradleyTerryConfig
    personalized = False
    config: BradleyTerryConfig

    def _fit(self, data: PreferenceData, *, progress: bool) -> dict[str, Any]:
        import torch

        self.scaler = Standardizer.fit(data)
        torch.manual_seed(self.config.training.seed)
        self.head = _head(data.dim, self.config.hidden)
        device = resolve_device(self.config.training.device)
        c = torch.from_numpy(self.scaler(data.chosen)).to(device)
        r = torch.from_numpy(self.scaler(data.rejected)).to(device)
        t = torch.from_numpy(preference_targets(data.strength)).to(device)

        def loss(rows: np.ndarray, epoch: int) -> torch.Tensor:
            idx = torch.from_numpy(rows).to(device)
            logits = (self.head(c[idx]) - self.head(r[idx])).squeeze(-1)
            return bradley_terry_loss(logits, t[idx])

        result = fit_module(
            self.head, loss, len(data), self.config.training, desc="bt", progress=progress
        )
        self._cache_linear()
        self.users = {u: UserState(vector=np.zeros(0, dtype=np.float32)) for u in data.user_ids}
        return {
            "epochs": result.epochs,
            "train_loss": result.train_loss,
            "val_loss": result.val_loss,
        }

    def _cache_linear(self) -> None:
        """For a linear head, keep numpy weights so scoring needs no torch call."""
        self._w = None
        if self.config.hidden == 0:
            lin = self.head[0]
            self._w = (lin.weight.detach().numpy()[0] / self.scaler.std).astype(np.float32)
            self._b = float(
                lin.bias.detach().numpy()[0]
                - (self.scaler.mean / self.scaler.std) @ lin.weight.detach().numpy()[0]
            )

    def _embed_user(self, data: PreferenceData) -> UserState:
        return UserState(vector=np.zeros(0, dtype=np.float32))

    def prior(self) -> UserState:
        return UserState(vector=np.zeros(0, dtype=np.float32))

    def _reward(self, vectors: np.ndarray, prompt: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self._w is not None:
            return items @ self._w + self._b
        import torch

        with torch.no_grad():
            return self.head(torch.from_numpy(self.scaler(items))).squeeze(-1).numpy()

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"head.{k}": v.detach().numpy() for k, v in self.head.state_dict().items()}
        state.update(self.scaler.state())
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        import torch

        self.scaler = Standardizer.from_state(state)
        assert self.dim is not None
        self.head = _head(self.dim, self.config.hidden)
        self.head.load_state_dict(
            {
                k[len("head.") :]: torch.from_numpy(np.array(v))
                for k, v in state.items()
                if k.startswith("head.")
            }
        )
        self.head.eval()
        self._cache_linear()
