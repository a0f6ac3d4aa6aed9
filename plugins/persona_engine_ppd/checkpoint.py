"""Building, saving and loading PPD models (safetensors weights plus a JSON config, never pickles).

A model directory holds ``ppd.json`` (the :class:`ModelConfig`, the user-embedding width, the noise
schedule, the image encoder and what training measured), ``adapter.safetensors`` and, for the tiny
backbone, ``backbone.safetensors`` (the pre-trained UNet and prompt embedding) and
``encoder.safetensors`` (the trained ``tiny-image`` encoder). A model with
``adapter.user_space="population"`` also keeps ``user_space.safetensors``, the basis of its
training users' space (:mod:`.user_space`; its rank and how it was chosen are under ``user_space``
in ``ppd.json``). A pipeline-backbone model keeps only the adapter (and that basis) and points at
the pipeline's directory; whether that pipeline is SD 1.5-style or SDXL-style is read from its
UNet on loading (``backbone_variant`` in ``ppd.json`` records it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from persona_engine.errors import NoModelError, PersonaEngineError
from persona_engine.extras import require
from persona_engine.paths import writing_directory

from .config import ModelConfig
from .precision import resolve_dtype

FORMAT_VERSION = 1
MODEL_FILE = "ppd.json"
ENCODER_WEIGHTS = "encoder.safetensors"


def tiny_scheduler_config(cfg: ModelConfig) -> dict[str, Any]:
    return {
        "num_train_timesteps": cfg.num_train_timesteps,
        "beta_schedule": cfg.beta_schedule,
        "prediction_type": cfg.prediction_type,
        "clip_sample": True,
        "clip_sample_range": 1.0,
    }


def load_pipeline_backbone(
    path: str, *, device: str = "cpu", dtype: Any = None
) -> tuple[Any, dict[str, Any]]:
    """The backbone of a local diffusers pipeline directory (on ``device``, in ``dtype``, a
    ``torch.dtype``; None keeps float32), and its scheduler's configuration. Its kind follows the
    UNet's config: ``addition_embed_type="text_time"`` is SDXL-style (two text encoders, see
    :mod:`.sdxl`), none is SD 1.5-style. Loads with ``local_files_only``: nothing is downloaded."""
    DiffusionPipeline = require("diffusers", "images", "PPD image generation").DiffusionPipeline
    import torch

    from .model import PipelineBackbone
    from .sdxl import SDXLBackbone, is_sdxl_unet

    if not path or not Path(path).is_dir():
        raise PersonaEngineError(
            f"no diffusers pipeline at {path!r}: pass model.pipeline_path, a local directory"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # diffusers renamed from_pretrained's torch_dtype to dtype (0.36); casting after loading works
    # with every version the extra allows
    pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True)
    unet = getattr(pipe, "unet", None)
    sdxl = unet is not None and is_sdxl_unet(unet)
    parts = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]
    if sdxl:
        parts += ["text_encoder_2", "tokenizer_2"]
    missing = [c for c in parts if getattr(pipe, c, None) is None]
    if missing:
        kind = (
            "an SDXL-style pipeline (its UNet takes addition_embed_type='text_time') needs both text encoders and tokenizers"
            if sdxl
            else "PPD needs a UNet text-to-image pipeline (e.g. Stable Diffusion 1.5 or SDXL)"
        )
        raise PersonaEngineError(f"the pipeline at {path} lacks {missing}: {kind}")
    added = getattr(pipe.unet.config, "addition_embed_type", None)
    if added is not None and not sdxl:
        raise PersonaEngineError(
            f"the UNet at {path} takes addition_embed_type={added!r}; PPD supports none (SD 1.5-style) and 'text_time' (SDXL-style)"
        )
    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    size = int(pipe.unet.config.sample_size) * vae_scale
    if sdxl:
        backbone: PipelineBackbone = SDXLBackbone(
            pipe.unet,
            pipe.vae,
            pipe.text_encoder,
            pipe.tokenizer,
            pipe.text_encoder_2,
            pipe.tokenizer_2,
            size,
            force_zeros_for_empty_prompt=bool(
                getattr(pipe.config, "force_zeros_for_empty_prompt", True)
            ),
        )
    else:
        backbone = PipelineBackbone(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, size)
    backbone.place(device, dtype if dtype is not None else torch.float32)
    return backbone, dict(pipe.scheduler.config)


def build_model(
    cfg: ModelConfig,
    user_dim: int,
    *,
    seed: int = 0,
    device: str = "cpu",
    dtype: str | None = None,
) -> Any:
    """A fresh PPD model: a new tiny backbone (seeded) or a loaded pipeline, plus a zero-initialised
    adapter, on ``device``; the backbone in ``dtype`` (a :data:`.precision.DTYPE_NAMES` name;
    default ``cfg.dtype``), the adapter in float32 whatever it is (master weights, see
    :mod:`.model`). The tiny backbone is initialised in float32 and then cast, so every precision
    starts from the same weights."""
    import torch

    from .model import PPDModel, TinyBackbone, UserAdapter

    torch_dtype = resolve_dtype(dtype or cfg.dtype, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg.backbone == "tiny":
            backbone, sched = TinyBackbone(cfg.tiny), tiny_scheduler_config(cfg)
        else:
            backbone, sched = load_pipeline_backbone(
                cfg.pipeline_path, device=device, dtype=torch_dtype
            )
        adapter = UserAdapter.for_unet(backbone.unet, user_dim, backbone.token_dim, cfg.adapter)
    return PPDModel(backbone, adapter, sched).place(device, torch_dtype)


def _atomic_write_dir(path: Path, write: Any) -> Path:
    """``write(tmp)`` into a fresh directory that then replaces ``path`` whole."""
    with writing_directory(path) as tmp:
        write(tmp)
    return path


def _float32_state(module: Any) -> dict[str, Any]:
    """A module's state dict on the CPU with floating tensors in float32: a saved model does not
    depend on the precision it was trained in."""
    return {
        k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in module.state_dict().items()
    }


def save_model(
    model: Any,
    cfg: ModelConfig,
    directory: str | Path,
    *,
    encoder_state: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a PPD model directory (atomically: a reader never sees half a model)."""
    from safetensors.torch import save_file

    from .user_space import save_user_space

    space = getattr(model, "user_space", None)
    if (cfg.adapter.user_space == "population") != (space is not None):
        raise ValueError(
            f"the model config says user_space={cfg.adapter.user_space!r} but the model "
            f"{'has no' if space is None else 'has a'} population user space; "
            "train it with that config (the trainer fits the space)"
        )

    def write(tmp: Path) -> None:
        encoder_config = dict(cfg.encoder_config)
        if encoder_state is not None:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in encoder_state.items()},
                str(tmp / ENCODER_WEIGHTS),
            )
            encoder_config["weights_path"] = ENCODER_WEIGHTS
        save_file(_float32_state(model.adapter), str(tmp / "adapter.safetensors"))
        if cfg.backbone == "tiny":
            save_file(_float32_state(model.backbone), str(tmp / "backbone.safetensors"))
        meta = {
            "format_version": FORMAT_VERSION,
            "model": {**cfg.model_dump(mode="json"), "encoder_config": encoder_config},
            "user_dim": model.user_dim,
            "backbone_variant": getattr(model.backbone, "variant", model.backbone.kind),
            "scheduler": model.scheduler_config,
            "metrics": metrics or {},
        }
        if space is not None:
            meta["user_space"] = save_user_space(space, tmp)
        (tmp / MODEL_FILE).write_text(json.dumps(meta, indent=2, default=str))

    return _atomic_write_dir(Path(directory), write)


def read_model_info(directory: str | Path) -> dict[str, Any]:
    """``ppd.json`` of a model directory, with the encoder's weights path made absolute."""
    path = Path(directory)
    if not (path / MODEL_FILE).is_file():
        raise NoModelError(f"no PPD model at {path} (no {MODEL_FILE})")
    meta = json.loads((path / MODEL_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise NoModelError(
            f"PPD model at {path} has format {meta.get('format_version')}, this version reads {FORMAT_VERSION}"
        )
    enc = meta["model"].get("encoder_config", {})
    if enc.get("weights_path") and not Path(enc["weights_path"]).is_absolute():
        enc["weights_path"] = str((path / enc["weights_path"]).resolve())
    return meta


def load_model(
    directory: str | Path, *, device: str = "cpu", dtype: str | None = None
) -> tuple[Any, ModelConfig, dict[str, Any]]:
    """(model, its config, ppd.json) of a saved PPD model directory, on ``device``, the backbone in
    ``dtype`` (a :data:`.precision.DTYPE_NAMES` name; default: the precision the model was built
    in), the adapter in float32."""
    from safetensors.torch import load_file

    from .model import PPDModel, TinyBackbone, UserAdapter
    from .user_space import load_user_space

    path = Path(directory)
    meta = read_model_info(path)
    cfg = ModelConfig.model_validate(meta["model"])
    torch_dtype = resolve_dtype(dtype or cfg.dtype, device)
    if cfg.backbone == "tiny":
        backbone = TinyBackbone(cfg.tiny)
        backbone.load_state_dict(load_file(str(path / "backbone.safetensors")))
    else:
        backbone, _ = load_pipeline_backbone(cfg.pipeline_path, device=device, dtype=torch_dtype)
    adapter = UserAdapter.for_unet(
        backbone.unet, int(meta["user_dim"]), backbone.token_dim, cfg.adapter
    )
    adapter.load_state_dict(load_file(str(path / "adapter.safetensors")))
    model = PPDModel(backbone, adapter, meta["scheduler"]).place(device, torch_dtype)
    if cfg.adapter.user_space == "population":
        model.user_space = load_user_space(path, meta.get("user_space"), int(meta["user_dim"]))
    model.eval()
    model.requires_grad_(False)
    return model, cfg, meta
