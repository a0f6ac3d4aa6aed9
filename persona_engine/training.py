"""The one training loop every torch backend uses.

Seeded shuffling and initialisation, a validation split for early stopping (the best weights are
restored at the end), AdamW, mini-batches, a progress bar, on ``TrainingConfig.device``. Backends
supply a module and a loss function over a batch of row indices; datasets are data, not copied
scripts. The loop moves the module to the training device; the loss function puts its batch on
the module's device (``resolve_device(config.device)``, or the device of the module's parameters).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import TrainingConfig
from .errors import InvalidInputError
from .progress import progress_bar

if TYPE_CHECKING:
    import torch


@dataclass
class TrainResult:
    epochs: int
    best_epoch: int
    train_loss: float
    val_loss: float | None
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` names ('auto': CUDA when available, else CPU), checked to exist
    here: an unknown name or an absent accelerator is a clear error, never a silent CPU run."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InvalidInputError(
            f"unknown training device {name!r}; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(
                f"training device {name!r} asked for, but torch sees no CUDA device here "
                "(use device='cpu' or 'auto')"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidInputError(
                f"training device {name!r} does not exist: {torch.cuda.device_count()} CUDA "
                "device(s) here"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(f"training device {name!r} asked for, but MPS is not available")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise InvalidInputError(
            f"training device {name!r} is not supported; use 'cpu', 'cuda', 'cuda:N' or 'mps'"
        )
    return device


def _module_device(module: torch.nn.Module) -> torch.device | None:
    for p in module.parameters():
        return p.device
    return None


def split_indices(
    n: int, val_fraction: float, seed: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation row indices. With ``groups`` (user index), each group is split on its own
    so every user keeps training rows."""
    rng = np.random.default_rng(seed)
    if val_fraction <= 0 or n < 10:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    if groups is None:
        perm = rng.permutation(n)
        k = int(round(n * val_fraction))
        return np.sort(perm[k:]), np.sort(perm[:k])
    train, val = [], []
    for g in np.unique(groups):
        rows = np.nonzero(groups == g)[0]
        rows = rows[rng.permutation(len(rows))]
        k = int(math.floor(len(rows) * val_fraction))
        if len(rows) - k < 1:
            k = 0
        val.append(rows[:k])
        train.append(rows[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def fit_module(
    module: torch.nn.Module,
    loss_fn: Callable[[np.ndarray, int], torch.Tensor],
    n_rows: int,
    config: TrainingConfig,
    *,
    groups: np.ndarray | None = None,
    params: list[Any] | None = None,
    desc: str = "training",
    progress: bool = False,
    eval_loss_fn: Callable[[np.ndarray], torch.Tensor] | None = None,
) -> TrainResult:
    """Minimise ``loss_fn(batch_rows, epoch)`` over rows ``0..n_rows-1``.

    ``eval_loss_fn(rows)`` gives the validation loss (defaults to ``loss_fn(rows, epoch)`` under
    ``torch.no_grad``). The module trains on ``config.device`` and is left holding the weights of
    the best validation epoch, back on the device it came in on.
    """
    device = resolve_device(config.device)
    origin = _module_device(module)
    module.to(device)
    try:
        return _fit(module, loss_fn, n_rows, config, groups, params, desc, progress, eval_loss_fn)
    except RuntimeError as e:
        if "same device" in str(e):  # torch: "Expected all tensors to be on the same device"
            raise InvalidInputError(
                f"{desc}: training on {device}, but the loss mixed tensors of another device "
                f"({e}); the loss function must put its batch on the module's device"
            ) from e
        raise
    finally:
        if origin is not None:
            module.to(origin)


def _fit(
    module: torch.nn.Module,
    loss_fn: Callable[[np.ndarray, int], torch.Tensor],
    n_rows: int,
    config: TrainingConfig,
    groups: np.ndarray | None,
    params: list[Any] | None,
    desc: str,
    progress: bool,
    eval_loss_fn: Callable[[np.ndarray], torch.Tensor] | None,
) -> TrainResult:
    import torch

    seed_everything(config.seed)
    train_rows, val_rows = split_indices(n_rows, config.val_fraction, config.seed, groups)
    opt = torch.optim.AdamW(
        params if params is not None else list(module.parameters()),
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    rng = np.random.default_rng(config.seed + 1)
    best_state, best_val, best_epoch, wait = None, math.inf, 0, 0
    history: list[dict[str, float]] = []
    bar = progress_bar(total=config.epochs, desc=desc, unit="epoch", disable=not progress)
    train_loss = math.nan
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        module.train()
        perm = train_rows[rng.permutation(len(train_rows))]
        total, count = 0.0, 0
        for i in range(0, len(perm), config.batch_size):
            rows = perm[i : i + config.batch_size]
            loss = loss_fn(rows, epoch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{desc}: loss became {loss.item()} at epoch {epoch}; lower the learning rate"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
            count += len(rows)
        train_loss = total / max(count, 1)
        record = {"epoch": float(epoch), "train_loss": train_loss}
        if len(val_rows):
            module.eval()
            with torch.no_grad():
                val = float(eval_loss_fn(val_rows) if eval_loss_fn else loss_fn(val_rows, epoch))
            record["val_loss"] = val
            if val < best_val - 1e-5:
                best_val, best_epoch, wait = val, epoch, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                wait += 1
        history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        bar.update(1)
        if len(val_rows) and wait >= config.patience:
            break
    bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    else:
        best_epoch = epoch
    module.eval()
    return TrainResult(
        epochs=epoch,
        best_epoch=best_epoch,
        train_loss=train_loss,
        val_loss=None if best_val is math.inf else best_val,
        history=history,
    )
