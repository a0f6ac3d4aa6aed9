"""Options of the HTTP service (``persona serve`` flags map onto these fields)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


class ServiceConfig(BaseModel):
    """How the service listens, what it accepts, and how it protects the store."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Interface to bind; loopback by default.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    encoder: str = Field(
        "minilm", description="Text encoder plugin used for models trained through the service."
    )
    encoder_config: dict[str, Any] = Field(
        default_factory=dict, description="Options of that encoder."
    )
    auth: bool = Field(
        True, description="Require an API key on every endpoint but /health. Off only on loopback."
    )
    max_body_bytes: int = Field(
        4 << 20, ge=1024, description="Largest request body accepted; larger ones get 413."
    )
    max_batch: int = Field(1000, ge=1, description="Most comparisons in one batch request.")
    max_candidates: int = Field(
        256, ge=1, description="Most candidates in one score or rank request."
    )
    write_queue: int = Field(
        1024, ge=1, description="Writes waiting for the single writer before new ones get 503."
    )
    write_timeout_s: float = Field(
        30.0, gt=0, description="How long a request waits for its write to commit."
    )
    synchronous: Literal["normal", "full"] = Field(
        "normal",
        description="SQLite synchronous mode. 'normal' (WAL) survives a killed process; 'full' also survives power loss.",
    )
    freeze_heap: bool = Field(
        False,
        description="Once start-up (model, encoder, a warm-up score) is done, move every object alive out of the garbage collector's reach (gc.freeze; see persona_engine.heap). `persona serve` turns it on: the process is the server's own.",
    )
    train_timeout_s: float = Field(
        3600.0, gt=0, description="A training run longer than this is stopped and marked failed."
    )
