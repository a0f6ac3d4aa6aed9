"""The step loop every PPD training stage runs: AdamW, seeded per step, resumable, with loss
scaling for float16.

Every step draws its batch, its timesteps and its noise from generators seeded by
``(seed, step)``, so a run resumed from a checkpoint repeats the uninterrupted run exactly
(:func:`persona_engine.training.seed_everything` seeds the rest). A checkpoint holds the
parameters and the optimiser's state (safetensors) and the step, the log and the loss scaler's
state (JSON).

Half precision. The trained parameters should be float32 (the adapter's always are, see
:mod:`.model`), so AdamW's moments are float32 too and an update far below a half-precision
weight's resolution still lands. A UNet in float16 adds a second hazard: gradients smaller than
2^-24 flush to zero on the way back. With ``loss_scaling`` the loss is multiplied by a scale ``S``
before the backward pass (``torch.amp.GradScaler``, Micikevicius et al., 2018, "Mixed Precision
Training"); the float32 gradients are divided by ``S`` before clipping; a step whose gradients hold
an inf or a NaN (``S`` too large) is skipped and ``S`` halved; ``S`` doubles after 2000 clean
steps. bfloat16 has float32's exponent range and needs no scaling.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from persona_engine.progress import progress_bar
from persona_engine.training import seed_everything

from .checkpoint import _atomic_write_dir
from .config import StepTrainingConfig

STATE_WEIGHTS = "state.safetensors"
STATE_FILE = "state.json"


@dataclass
class StepResult:
    steps: int
    resumed_from: int
    history: list[dict[str, float]] = field(default_factory=list)

    def final(self, key: str, share: float = 0.2) -> float | None:
        """Mean of ``key`` over the last ``share`` of the logged history."""
        vals = [h[key] for h in self.history if key in h]
        if not vals:
            return None
        k = max(1, int(math.ceil(len(vals) * share)))
        return float(np.mean(vals[-k:]))


def _save_state(
    directory: Path,
    step: int,
    params: Mapping[str, torch.Tensor],
    opt: torch.optim.Optimizer,
    history: list[dict[str, float]],
    scaler: Any,
) -> None:
    from safetensors.torch import save_file

    tensors = {f"param.{k}": v.detach().cpu().contiguous() for k, v in params.items()}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / STATE_WEIGHTS))
        (tmp / STATE_FILE).write_text(
            json.dumps(
                {
                    "step": step,
                    "params": list(params),
                    "history": history,
                    "loss_scaler": scaler.state_dict() if scaler.is_enabled() else None,
                }
            )
        )

    _atomic_write_dir(directory, write)


def _load_state(
    directory: Path, params: Mapping[str, torch.Tensor], opt: torch.optim.Optimizer, scaler: Any
) -> tuple[int, list[dict[str, float]]]:
    from safetensors.torch import load_file

    meta = json.loads((directory / STATE_FILE).read_text())
    if meta["params"] != list(params):
        raise ValueError(f"the checkpoint in {directory} was written for other parameters")
    tensors = load_file(str(directory / STATE_WEIGHTS))
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(tensors[f"param.{k}"].to(p.device))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    sd = opt.state_dict()
    sd["state"] = {
        i: {k: (v if k == "step" else v.to(params[list(params)[i]].device)) for k, v in st.items()}
        for i, st in state.items()
    }
    opt.load_state_dict(sd)
    if scaler.is_enabled() and meta.get("loss_scaler"):
        scaler.load_state_dict(meta["loss_scaler"])
    return int(meta["step"]), list(meta["history"])


def learning_rate(cfg: StepTrainingConfig, step: int) -> float:
    """Linear warm-up, then constant or cosine decay (a function of the step: resumable)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    done = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))


def run_steps(
    params: dict[str, torch.nn.Parameter],
    step_loss: Callable[
        [int, np.random.Generator, torch.Generator], tuple[torch.Tensor, dict[str, float]]
    ],
    cfg: StepTrainingConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    desc: str = "training",
    progress: bool = False,
    log_every: int = 10,
    items_per_micro_batch: int | None = None,
    loss_scaling: bool = False,
) -> StepResult:
    """Minimise ``step_loss(step, numpy_rng, torch_generator)`` for ``cfg.steps`` steps over
    ``params``, resuming from ``checkpoint_dir`` when it holds a checkpoint of these parameters.
    Each step sums the gradients of ``cfg.accumulation_steps`` calls (micro-batches, drawn in turn
    from the step's generators). With ``items_per_micro_batch``, the log reports items per second.
    ``loss_scaling`` (for a model computing in float16; the parameters must be float32) scales the
    loss and skips the steps whose gradients overflow (see the module docstring); the log then
    reports the scale and the steps skipped."""
    seed_everything(cfg.seed)
    plist = list(params.values())
    scaler = loss_scaler(plist, enabled=loss_scaling)
    opt = torch.optim.AdamW(plist, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    history: list[dict[str, float]] = []
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None and (ckpt / STATE_FILE).is_file():
        start, history = _load_state(ckpt, params, opt, scaler)
    bar = progress_bar(total=cfg.steps, initial=start, desc=desc, unit="step", disable=not progress)
    window: dict[str, list[float]] = {}
    tick = time.perf_counter()
    for step in range(start, cfg.steps):
        rng = np.random.default_rng([cfg.seed, step])
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        opt.zero_grad(set_to_none=True)
        for _ in range(cfg.accumulation_steps):
            loss, stats = step_loss(step, rng, gen)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{desc}: loss became {loss.item()} at step {step}; lower the learning rate (or beta)"
                )
            scaler.scale(loss / cfg.accumulation_steps).backward()
            for k, v in {"loss": float(loss.detach()), **stats}.items():
                window.setdefault(k, []).append(v)
        scaler.unscale_(opt)  # no-ops without loss scaling
        torch.nn.utils.clip_grad_norm_(plist, cfg.max_grad_norm)
        scale = scaler.get_scale()
        scaler.step(opt)  # skipped when a gradient is inf or NaN (loss scaling only)
        scaler.update()
        if scaler.is_enabled():
            window.setdefault("loss_scale", []).append(scale)
            window.setdefault("skipped_steps", []).append(float(scaler.get_scale() < scale))
        done = step + 1
        if done % log_every == 0 or done == cfg.steps:
            record = {"step": float(done), **{k: float(np.mean(v)) for k, v in window.items()}}
            if "skipped_steps" in window:
                record["skipped_steps"] = float(np.sum(window["skipped_steps"]))
            if items_per_micro_batch is not None:
                now = time.perf_counter()
                record["pairs_per_s"] = (
                    items_per_micro_batch * len(window["loss"]) / max(now - tick, 1e-9)
                )
                tick = now
            history.append(record)
            window = {}
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "step"})
        bar.update(1)
        if ckpt is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            _save_state(ckpt, done, params, opt, history, scaler)
    bar.close()
    return StepResult(steps=cfg.steps, resumed_from=start, history=history)


def loss_scaler(params: list[torch.nn.Parameter], *, enabled: bool) -> Any:
    """A ``torch.amp.GradScaler`` for ``params`` (disabled: every call passes through). Loss
    scaling unscales float32 gradients only: the parameters must be float32 master weights."""
    if enabled:
        low = sorted({str(p.dtype) for p in params if p.dtype != torch.float32})
        if low:
            raise ValueError(
                f"loss scaling needs float32 parameters (master weights), got {low}; keep the trained parameters in float32 and cast in the forward pass"
            )
    device = params[0].device.type if params else "cpu"
    return torch.amp.GradScaler(device, enabled=enabled)
