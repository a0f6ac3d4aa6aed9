"""Where faiss comes from and which device an index lives on.

faiss is imported lazily (``import persona_engine`` must stay cheap). The ``cpu`` extra installs
``faiss-cpu``; the ``gpu`` extra installs ``faiss-gpu`` (never both: they share the module name).
:func:`faiss_runtime` says which one is present and whether a GPU can be used; the index code talks
to the device only through :class:`FaissRuntime`, so the CPU and GPU paths share one interface.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import PersonaEngineError

_RUNTIMES: dict[str, FaissRuntime] = {}


def import_faiss() -> Any:
    """The faiss module, or a clear error naming the extra to install."""
    from ..extras import require

    return require("faiss", "cpu", "similar-user search")


@dataclass
class FaissRuntime:
    """faiss plus the device indexes are searched on.

    ``device`` is ``"cpu"`` or ``"gpu"``. On a GPU, indexes keep a CPU master copy (the one that is
    updated, saved and compacted) and search a mirror made by ``index_cpu_to_gpu``; the mirror is
    re-made after the master changes (:meth:`to_device`).
    """

    faiss: Any
    device: str = "cpu"
    gpu_id: int = 0
    _resources: Any = field(default=None, repr=False)

    @property
    def on_gpu(self) -> bool:
        return self.device == "gpu"

    def to_device(self, index: Any) -> Any:
        """A searchable copy of ``index`` on this runtime's device (the index itself on CPU)."""
        if not self.on_gpu:
            return index
        if self._resources is None:
            self._resources = self.faiss.StandardGpuResources()
        return self.faiss.index_cpu_to_gpu(self._resources, self.gpu_id, index)

    def set_threads(self, n: int | None) -> None:
        if n:
            self.faiss.omp_set_num_threads(int(n))


def gpu_count(faiss: Any) -> int:
    """GPUs faiss can use: 0 with faiss-cpu (no ``StandardGpuResources``)."""
    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "get_num_gpus"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # a faiss-gpu build without a usable driver
        return 0


def faiss_runtime(device: str = "auto") -> FaissRuntime:
    """The runtime for ``device``: ``"auto"`` (GPU when faiss-gpu sees one), ``"cpu"`` or ``"gpu"``.

    ``PERSONA_ENGINE_FAISS_DEVICE`` overrides ``"auto"``.
    """
    if device == "auto":
        device = os.environ.get("PERSONA_ENGINE_FAISS_DEVICE", "auto")
    if device not in ("auto", "cpu", "gpu"):
        raise PersonaEngineError(
            f"unknown faiss device {device!r}; use auto, cpu or gpu",
            code="invalid_input",
            status=422,
        )
    if device in _RUNTIMES:
        return _RUNTIMES[device]
    faiss = import_faiss()
    n_gpu = gpu_count(faiss)
    if device == "gpu" and n_gpu == 0:
        raise PersonaEngineError(
            "device 'gpu' asked for, but faiss sees no GPU (install the `gpu` extra, faiss-gpu, on a CUDA machine)",
            code="invalid_input",
            status=422,
        )
    chosen = "gpu" if (device == "gpu" or (device == "auto" and n_gpu > 0)) else "cpu"
    runtime = FaissRuntime(faiss=faiss, device=chosen)
    _RUNTIMES[device] = runtime
    return runtime
