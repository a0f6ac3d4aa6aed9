"""Fitting one new user's mixture weights with every PAL network frozen.

The official code re-initialises the user's logits from N(0, 1) and runs AdamW (lr 5e-3, 20
epochs) over them: the maximum-likelihood fit of the shots. Two procedures
(``PALConfig.onboarding``), one solver, a damped Gauss-Newton (Levenberg-Marquardt) method over
the K logits, a handful of iterations, deterministic:

- ``"map"``: the maximum a posteriori logits under the population's distribution of user weights
  (``user_prior.LogitPrior``, fitted to the training users after ``fit``), from its mean;
- ``"published"``: the same loss as the official code with a tiny L2, from the centre of the simplex.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .inference import NumpyProjector, softmax
from .loss import onboarding_objective

LogitsFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
MAX_STEP = 8.0  # largest change of any logit in one step


def _softmax_jacobian(w: np.ndarray) -> np.ndarray:
    return np.diag(w) - np.outer(w, w)


def ideal_point_logits(
    item_map: NumpyProjector, prototypes: np.ndarray, chosen: np.ndarray, rejected: np.ndarray
) -> LogitsFn:
    """PAL-A: ``s_i(theta) = |f(y_r) - a| - |f(y_c) - a|``, ``a = f(P^T softmax(theta))``, and ds/dtheta."""
    fc = item_map(chosen).astype(np.float64)
    fr = item_map(rejected).astype(np.float64)
    protos = prototypes.astype(np.float64)

    def logits(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = softmax(theta)
        ideal, jac_protos = item_map.value_and_directions(w @ protos, protos.T)  # a and da/dw
        to_c, to_r = ideal - fc, ideal - fr
        dist_c = np.maximum(np.linalg.norm(to_c, axis=1), 1e-12)
        dist_r = np.maximum(np.linalg.norm(to_r, axis=1), 1e-12)
        d_ideal = to_r / dist_r[:, None] - to_c / dist_c[:, None]  # ds/da, (n, d_pref)
        jac = d_ideal @ jac_protos @ _softmax_jacobian(w)
        return dist_r - dist_c, jac

    return logits


def prompt_mixture_logits(
    points: np.ndarray, chosen_unit: np.ndarray, rejected_unit: np.ndarray, scale: float
) -> LogitsFn:
    """PAL-B: ``s_i(theta) = s (cos(f_c, a_i) - cos(f_r, a_i))``, ``a_i = sum_k w_k g_k(x_i)``, and ds/dtheta.

    ``points`` are the rows' g_k(x) (n, K, d); ``chosen_unit``/``rejected_unit`` the unit f(y).
    """
    points = points.astype(np.float64)
    fc, fr = chosen_unit.astype(np.float64), rejected_unit.astype(np.float64)

    def logits(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = softmax(theta)
        ideal = np.einsum("k,nkd->nd", w, points)
        norm = np.maximum(np.linalg.norm(ideal, axis=1, keepdims=True), 1e-12)
        unit = ideal / norm
        cos_c, cos_r = (fc * unit).sum(1), (fr * unit).sum(1)
        d_ideal = scale * ((fc - cos_c[:, None] * unit) - (fr - cos_r[:, None] * unit)) / norm
        jac = np.einsum("nkd,nd->nk", points, d_ideal) @ _softmax_jacobian(w)
        return scale * (cos_c - cos_r), jac

    return logits


def fit_mixture_logits(
    logits_fn: LogitsFn,
    n_prototypes: int,
    target: np.ndarray,
    *,
    kind: str,
    prior_mean: np.ndarray,
    prior_precision: np.ndarray,
    margin: float,
    sharpness: float,
    max_iter: int,
    start: np.ndarray | None = None,
    tol: float = 1e-7,
    w_tol: float = 1e-4,
) -> np.ndarray:
    """Levenberg-Marquardt on :func:`persona_engine_pal.loss.onboarding_objective` under the
    penalty ``N(prior_mean, prior_precision^-1)``, from ``start`` (default theta = 0).

    Stops when the gradient vanishes or the weights ``softmax(theta)`` move less than ``w_tol``
    in a step (with separable comparisons theta itself may drift on towards a vertex for long).
    """
    theta = (
        np.zeros(n_prototypes, dtype=np.float64)
        if start is None
        else np.array(start, dtype=np.float64)
    )
    if n_prototypes == 1:
        return theta
    target = np.asarray(target, dtype=np.float64)

    def evaluate(th: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        s, jac = logits_fn(th)
        return onboarding_objective(
            s,
            jac,
            th,
            target,
            kind=kind,
            prior_mean=prior_mean,
            prior_precision=prior_precision,
            margin=margin,
            sharpness=sharpness,
        )

    value, grad, hess = evaluate(theta)
    damping, growth = (
        max(float(np.diag(hess).max()), 1e-12),
        2.0,
    )  # cautious start: full Gauss-Newton steps overshoot early
    eye = np.eye(n_prototypes)
    for _ in range(max_iter):
        if np.abs(grad).max() < tol:
            break
        step = np.linalg.solve(hess + damping * eye, -grad)
        longest = np.abs(step).max()
        if longest > MAX_STEP:
            step *= MAX_STEP / longest
        weight_change = np.abs(softmax(theta + step) - softmax(theta)).max()
        new = evaluate(theta + step)
        predicted = -float(grad @ step) - 0.5 * float(step @ hess @ step)
        ratio = (value - new[0]) / predicted if predicted > 0 else -1.0
        if ratio > 0:  # accept; Nielsen's damping update
            theta = theta + step
            value, grad, hess = new
            damping *= max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
            growth = 2.0
        else:
            damping *= growth
            growth *= 2.0
        if weight_change < w_tol:  # the user's point on the simplex has stopped moving
            break
    return theta
