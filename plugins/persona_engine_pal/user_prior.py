"""The population's distribution of user weights, as a Gaussian over centred logits.

A user's weights live on the simplex, ``w = softmax(theta)``; onboarding optimises ``theta``. The
logits are identified only up to a shift (``softmax(theta + c) = softmax(theta)``), so the
population is described in the centred log-ratio coordinates ``clr(w) = log w - mean_j log w_j``
(Aitchison 1982, "The statistical analysis of compositional data", J. R. Stat. Soc. B 44(2)),
which are the logits with their shift removed. After ``fit`` a Gaussian ``N(m, S)`` is fitted to
the training users' ``clr(w_u)``; MAP onboarding (``onboarding.py``) then minimises (``nll`` being the variant's loss)

    sum_i nll_i(theta) + 1/2 (theta - m)^T S^{-1} (theta - m).

``S`` is singular along the all-ones direction (the shift); a small ridge makes it invertible, and
the large precision it leaves along that direction pins the free shift of ``theta`` at ``m``'s
(which changes no weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHT_FLOOR = 1e-6  # weights below this count as this before the log (a vertex is not -inf)
RIDGE = 1e-2  # ridge added to S, as a share of its average variance


def centred_logits(weights: np.ndarray) -> np.ndarray:
    """``clr(w) = log w - mean(log w)`` for rows of simplex weights."""
    logs = np.log(np.maximum(np.asarray(weights, dtype=np.float64), WEIGHT_FLOOR))
    return logs - logs.mean(axis=-1, keepdims=True)


@dataclass
class LogitPrior:
    """``N(mean, precision^-1)`` over a user's centred logits."""

    mean: np.ndarray  # (K,)
    precision: np.ndarray  # (K, K)

    @classmethod
    def fit(cls, weights: np.ndarray, scale: float = 1.0) -> LogitPrior:
        """The Gaussian of the rows' centred logits, its covariance times ``scale``, plus a ridge."""
        x = centred_logits(weights)
        k = x.shape[1]
        mean = x.mean(axis=0)
        cov = scale * (x - mean).T @ (x - mean) / max(len(x), 1)
        ridge = RIDGE * max(float(np.trace(cov)) / k, 1e-4)
        precision = np.linalg.inv(cov + ridge * np.eye(k))
        # held at the precision it is saved in, so a loaded model onboards identically
        return cls(*(a.astype(np.float32).astype(np.float64) for a in (mean, precision)))

    def state(self, prefix: str = "user_prior") -> dict[str, np.ndarray]:
        return {
            f"{prefix}.mean": self.mean.astype(np.float32),
            f"{prefix}.precision": self.precision.astype(np.float32),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], prefix: str = "user_prior") -> LogitPrior:
        return cls(
            np.asarray(state[f"{prefix}.mean"], dtype=np.float64),
            np.asarray(state[f"{prefix}.precision"], dtype=np.float64),
        )
