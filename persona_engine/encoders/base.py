"""Encoders turn (prompt, response) pairs, and prompts, into feature vectors for the backends.

A reward is a function of the prompt and the response, r_u(x, y). An encoder that reads the prompt
(``reads_prompt = True``, e.g. a language model over the chat-rendered conversation) gives features
of the pair; one that does not (a sentence encoder of the response alone) gives features of the
response, whatever the prompt. Either way the backends receive, for every comparison, features of
(prompt, chosen) and (prompt, rejected) from :meth:`Encoder.encode_pairs`, and features of the
prompt alone from :meth:`Encoder.encode_prompts` (for prompt-conditioned mixtures such as PAL-B).

An encoder's output is its embedding followed by cheap scalar features of the response
(``feature_names``), since unit-normalised sentence embeddings lose signals such as length that
real preferences depend on. The encoder's ``id`` names the model and the scalar features, so cached
vectors of different encoders never mix.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from ..config import PluginConfig, make_config
from ..errors import InvalidInputError

SCALAR_FEATURES = {
    "log_chars": lambda t: math.log1p(len(t)) / 5.0,
    "log_words": lambda t: math.log1p(len(t.split())) / 4.0,
}


class EncoderConfig(PluginConfig):
    scalar_features: list[str] = Field(
        default_factory=lambda: ["log_chars", "log_words"],
        description=f"Cheap scalar features appended to the embedding; any of {sorted(SCALAR_FEATURES)}.",
    )
    batch_size: int = Field(64, ge=1, description="Texts per encoder forward pass.")
    device: str = Field("cpu", description="torch device.")


class Encoder(ABC):
    """Base class of encoder plugins. Subclasses set ``name`` and implement ``embed``/``embedding_dim``."""

    name: ClassVar[str] = ""
    modality: ClassVar[str] = "text"
    #: True when features depend on the prompt as well as the response (cached per pair).
    reads_prompt: ClassVar[bool] = False
    Config: ClassVar[type[EncoderConfig]] = EncoderConfig
    plugin: ClassVar[str] = ""

    def __init__(self, config: Any = None, **overrides: Any):
        self.config = make_config(self.Config, config, **overrides)
        unknown = [f for f in self.config.scalar_features if f not in SCALAR_FEATURES]
        if unknown and self.modality == "text":
            raise InvalidInputError(
                f"unknown scalar features {unknown}; known: {sorted(SCALAR_FEATURES)}"
            )

    @property
    def model_id(self) -> str:
        """What model is behind the embedding (a path or a name); part of :attr:`id`."""
        return self.name

    @property
    def id(self) -> str:
        feats = "+".join(self.config.scalar_features) if self.modality == "text" else ""
        return f"{self.name}:{self.model_id}" + (f"+{feats}" if feats else "")

    @property
    @abstractmethod
    def embedding_dim(self) -> int: ...

    @property
    def feature_names(self) -> list[str]:
        return [f"emb{i}" for i in range(self.embedding_dim)] + (
            list(self.config.scalar_features) if self.modality == "text" else []
        )

    @property
    def dim(self) -> int:
        return len(self.feature_names)

    @abstractmethod
    def embed(self, inputs: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts (or image paths) as an (n, embedding_dim) float32 array."""

    def encode(self, inputs: Sequence[str]) -> np.ndarray:
        """Embedding plus scalar features, (n, dim) float32."""
        inputs = list(inputs)
        if not inputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = np.asarray(self.embed(inputs), dtype=np.float32)
        if emb.shape != (len(inputs), self.embedding_dim):
            raise RuntimeError(
                f"encoder {self.name} returned shape {emb.shape}, expected {(len(inputs), self.embedding_dim)}"
            )
        if self.modality != "text" or not self.config.scalar_features:
            return emb
        return np.concatenate([emb, self.scalar_features(inputs)], axis=1)

    def scalar_features(self, texts: Sequence[str]) -> np.ndarray:
        """The configured scalar features of ``texts``, (n, len(scalar_features)) float32."""
        if self.modality != "text" or not self.config.scalar_features:
            return np.zeros((len(texts), 0), dtype=np.float32)
        return np.array(
            [[SCALAR_FEATURES[f](t) for f in self.config.scalar_features] for t in texts],
            dtype=np.float32,
        ).reshape(len(texts), len(self.config.scalar_features))

    # -- pairs ---------------------------------------------------------------------------------
    def embed_pairs(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Embed (prompt, response) pairs, (n, embedding_dim). Encoders that read the prompt
        override this; the default embeds the responses alone."""
        return self.embed(responses)

    def encode_pairs(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Features of (prompt, response) pairs: the pair embedding plus the scalar features of
        the response, (n, dim) float32. For an encoder that does not read the prompt this equals
        ``encode(responses)``."""
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise InvalidInputError(
                f"{len(prompts)} prompts and {len(responses)} responses: give one prompt per response"
            )
        if not self.reads_prompt:
            return self.encode(responses)
        if not responses:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = np.asarray(self.embed_pairs(prompts, responses), dtype=np.float32)
        if emb.shape != (len(responses), self.embedding_dim):
            raise RuntimeError(
                f"encoder {self.name} returned shape {emb.shape}, expected {(len(responses), self.embedding_dim)}"
            )
        return np.concatenate([emb, self.scalar_features(responses)], axis=1)

    @property
    def prompt_dim(self) -> int:
        """Length of the features of a prompt alone (:meth:`encode_prompts`)."""
        return self.dim

    def encode_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """Features of prompts on their own, (n, prompt_dim). The default encodes the prompt as a
        text; encoders that read the prompt may use their own rendering of it."""
        return self.encode(prompts)

    # -- fine-tuning -----------------------------------------------------------------------------
    def finetune(
        self,
        comparisons: Sequence[Any],
        options: dict[str, Any],
        *,
        personalized: bool,
        out_dir: Path,
        progress: bool = False,
    ) -> Encoder:
        """Train the encoder's backbone on ``comparisons`` (objects with ``user_id``, ``prompt``,
        ``chosen``, ``rejected``, ``strength``, ``tie``), save what was trained under ``out_dir``
        and return the adapted encoder, whose :attr:`id` differs from this one's. Encoders with a
        trainable backbone override this (``hf``: LoRA adapters); the rest refuse."""
        raise InvalidInputError(
            f"the {self.name!r} encoder has no trainable backbone; fine-tuning trains LoRA "
            "adapters on the 'hf' encoder's language model (train with --encoder hf)"
        )
