"""Optional dependencies: every missing one gives the same one-line error, naming the extra.

Each extra of ``pyproject.toml`` installs the packages of one feature; the code that needs one
imports it through :func:`require` at the point of use (``import persona_engine`` stays light)::

    uvicorn = require("uvicorn", "serve", "persona serve")
    # -> persona serve needs the 'serve' extra: pip install 'persona-engine[serve]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import PersonaEngineError

#: the extras of pyproject.toml and the modules each one provides
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "httpx", "prometheus_client", "jinja2"),
    "images": ("diffusers",),
    "cpu": ("faiss",),
    "gpu": ("faiss",),
    "finetune": ("peft",),
    "bench": ("textstat", "vaderSentiment"),
    "postgres": ("psycopg", "psycopg_pool"),
}

#: what to add to the hint of an extra that has an alternative
_ALTERNATIVES = {"cpu": " (or 'persona-engine[gpu]' on a CUDA machine)"}


class MissingExtraError(PersonaEngineError):
    """A feature needs an optional dependency that is not installed."""

    code = "missing_dependency"
    status = 500

    def __init__(self, what: str, extra: str):
        super().__init__(missing_extra_message(what, extra))
        self.what, self.extra = what, extra


def missing_extra_message(what: str, extra: str) -> str:
    """``<what> needs the '<extra>' extra: pip install 'persona-engine[<extra>]'``."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    hint = f"pip install 'persona-engine[{extra}]'{_ALTERNATIVES.get(extra, '')}"
    return f"{what} needs the '{extra}' extra: {hint}"


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` (e.g. ``"uvicorn"``, ``"diffusers.models.attention_processor"``), or raise
    :class:`MissingExtraError` saying that ``what`` needs ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(what, extra) from e
