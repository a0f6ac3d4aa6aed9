"""Train LoRA adapters on the ``hf`` encoder's backbone through the shared training loop, and save
them as ``adapter_model.safetensors`` + ``adapter_config.json`` (peft's format) + ``finetune.json``
(what was trained, on what base model, with what result)."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from persona_engine.config import TrainingConfig
from persona_engine.errors import InvalidInputError
from persona_engine.extras import require
from persona_engine.losses import preference_targets
from persona_engine.training import fit_module, resolve_device, seed_everything

from .config import LoRAConfig

if TYPE_CHECKING:
    from ..hf import HFEncoder

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "finetune.json")


def require_peft() -> None:
    """LoRA needs ``peft`` (the ``finetune`` extra); say how to get it."""
    require("peft", "finetune", "LoRA fine-tuning")


def _pairs(encoder: HFEncoder, comparisons: Sequence[Any], cfg: LoRAConfig) -> list[Any]:
    """The text comparisons that train the adapter: at most ``max_pairs``, a seeded draw."""
    texts = [c for c in comparisons if getattr(c, "kind", "text") == "text"]
    if not texts:
        raise InvalidInputError("fine-tuning needs text comparisons; none are stored")
    if len(texts) > cfg.max_pairs:
        keep = np.random.default_rng(cfg.seed).choice(len(texts), cfg.max_pairs, replace=False)
        texts = [texts[i] for i in sorted(keep)]
    return texts


def finetune_lora(
    encoder: HFEncoder,
    comparisons: Sequence[Any],
    cfg: LoRAConfig,
    *,
    user_heads: bool,
    out_dir: Path,
    progress: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Train LoRA adapters jointly with a reward head (``loss.py``) on ``comparisons`` and save the
    adapter to ``out_dir`` (replaced atomically). Returns (the backbone with its trained LoRA
    layers, in peft's wrapper; metrics)."""
    require_peft()
    import torch
    from peft import LoraConfig, get_peft_model

    from .loss import finetune_loss
    from .model import AdaptedReward

    device = resolve_device(cfg.device)
    pairs = _pairs(encoder, comparisons, cfg)
    users: dict[str, int] = {}
    for c in pairs:
        users.setdefault(c.user_id, len(users))
    seqs: list[list[int]] = []
    for c in pairs:
        seqs += [encoder.render_ids(c.prompt, c.chosen), encoder.render_ids(c.prompt, c.rejected)]
    encoder.check_length(max(len(s) for s in seqs))
    n = len(pairs)
    user_index = torch.tensor([users[c.user_id] if user_heads else 0 for c in pairs], device=device)
    strength = np.array([0.0 if c.tie else c.strength for c in pairs], dtype=np.float32)
    target = torch.from_numpy(preference_targets(strength)).to(device)
    pad = encoder.tokenizer.pad_token_id
    pad = 0 if pad is None else int(pad)

    backbone = encoder.load_base_model(device)
    lora = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
    )
    try:
        peft_model = get_peft_model(backbone, lora)
    except ValueError as e:  # peft: "Target modules {...} not found in the base model"
        raise InvalidInputError(f"LoRA target_modules {cfg.target_modules}: {e}") from None
    seed_everything(cfg.seed)
    module = AdaptedReward(
        backbone,
        encoder.hidden_size,
        cfg.head_rank if user_heads else 1,
        len(users) if user_heads else 1,
        encoder.config.layer,
    ).to(device)
    lora_params = [p for p in backbone.parameters() if p.requires_grad]

    def batch(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = [seqs[2 * i] for i in rows]
        rejected = [seqs[2 * i + 1] for i in rows]
        width = max(len(s) for s in chosen + rejected)
        ids = torch.full((2 * len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((2 * len(rows), width), dtype=torch.long)
        for j, s in enumerate(chosen + rejected):
            ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        return ids.to(device), mask.to(device)

    def loss(rows: np.ndarray, epoch: int) -> torch.Tensor:
        ids, mask = batch(rows)
        idx = torch.from_numpy(rows).to(device)
        reward = module(ids, mask, user_index[idx].repeat(2))
        return finetune_loss(reward[: len(rows)], reward[len(rows) :], target[idx])

    training = TrainingConfig(
        seed=cfg.seed,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        val_fraction=0.0,  # a few epochs over the data: no early stopping, no weight copies
        device=str(device),
    )
    started = time.perf_counter()
    result = fit_module(
        module,
        loss,
        n,
        training,
        params=[
            {"params": lora_params, "lr": cfg.lr},
            {"params": module.head_parameters(), "lr": cfg.head_lr},
        ],
        desc="lora",
        progress=progress,
    )
    seconds = time.perf_counter() - started
    steps = result.epochs * math.ceil(n / cfg.batch_size)
    metrics = {
        "pairs": n,
        "users": len(users),
        "user_heads": user_heads,
        "device": str(device),
        "epochs": result.epochs,
        "train_loss": result.train_loss,
        "loss_history": [h["train_loss"] for h in result.history],
        "seconds": seconds,
        "seconds_per_step": seconds / max(steps, 1),
        "trainable_parameters": sum(p.numel() for p in lora_params),
    }
    save_adapter(peft_model, out_dir, {"base_model_id": encoder.base_model_id, **metrics}, cfg)
    return peft_model, metrics


def save_adapter(peft_model: Any, out_dir: Path, info: dict[str, Any], cfg: LoRAConfig) -> Path:
    """Write the adapter's weights (safetensors), peft's config and ``finetune.json`` into
    ``out_dir`` atomically (a folder left by an interrupted earlier run is replaced)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        state = get_peft_model_state_dict(peft_model)
        save_file(
            {k: v.detach().to("cpu").contiguous() for k, v in state.items()},
            str(tmp / "adapter_model.safetensors"),
        )
        peft_model.peft_config["default"].save_pretrained(str(tmp))
        meta = {"format_version": 1, "lora": cfg.model_dump(mode="json"), **info}
        (tmp / "finetune.json").write_text(json.dumps(meta, indent=1))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
