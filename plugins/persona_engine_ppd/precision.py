"""The floating-point precision a PPD model runs in.

``float32`` is the default and the reference; ``float16`` and ``bfloat16`` halve the memory of the
backbone on a GPU (Stable Diffusion 1.5 in half precision is the usual setting). ``auto`` picks
``bfloat16`` on a CUDA device that supports it, else ``float32``. Whatever the precision, the
adapter's weights and AdamW's state are float32 master weights (:mod:`.model`), float16 training
scales the loss (:mod:`.steps`), the Diffusion-DPO loss is computed in float32 (:mod:`.loss`) and
sampled images are returned in float32 (:mod:`.sampling`).
"""

from __future__ import annotations

from typing import Any, Literal

#: What a ``dtype`` option accepts.
DTypeName = Literal["float32", "float16", "bfloat16", "auto"]
DTYPE_NAMES: tuple[str, ...] = ("float32", "float16", "bfloat16", "auto")


def resolve_dtype(name: str, device: Any = "cpu") -> Any:
    """The ``torch.dtype`` of ``name`` (one of :data:`DTYPE_NAMES`) for a model on ``device``."""
    import torch

    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; use one of {DTYPE_NAMES}")
    if name == "auto":
        on_cuda = torch.device(device).type == "cuda" and torch.cuda.is_available()
        return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32
    dtype = getattr(torch, name)
    assert isinstance(dtype, torch.dtype)
    return dtype
