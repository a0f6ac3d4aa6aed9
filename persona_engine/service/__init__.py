"""The HTTP service: ``persona serve``, or ``create_app(engine)`` to mount it in your own ASGI server.

Needs the ``serve`` extra (fastapi, uvicorn). See :mod:`.app` for the layout.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "ServiceConfig"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ..extras import require

        require("fastapi", "serve", "the HTTP service")
        from .app import create_app

        return create_app
    if name == "ServiceConfig":
        from .config import ServiceConfig

        return ServiceConfig
    raise AttributeError(name)
