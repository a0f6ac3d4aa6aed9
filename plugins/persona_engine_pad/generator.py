"""The ``pad`` generator: reward-guided decoding over the base top-k with a personalized reward head.

PAD (Chen et al., ICLR 2025, arXiv 2410.04070). The user's preference is a profile of attribute
weights ``p`` over the vocabulary's attributes, given with the request (``preference={"concise": 1}``,
a list of attribute names, or one name) or, for a user with stored comparisons, fitted from
them by Drift's closed form. As in the official runs, the base model is also prompted with the
preference (``preference_prompt``), and the trained head (:mod:`.trainer`, ``persona pad-train``)
re-ranks its top-k tokens with ``R(p, s, a) = sum_j p_j phi_j(s, a)`` (:mod:`.processor`).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any, Literal

from pydantic import Field

from persona_engine.errors import InvalidInputError, NoModelError
from persona_engine.generators import GenerationRequest, GenerationResult, Generator
from persona_engine.lm import DEFAULT_LM, DecodingConfig

REQUEST_KEYS = ("preference",)


class PadConfig(DecodingConfig):
    lm: str = Field(
        DEFAULT_LM, description="Base LM: 'smollm2' (embedded), a local HF folder or a .gguf file."
    )
    attributes: list[str] = Field(
        ["psoups"], min_length=1, description="Attribute vocabularies the preference is written in."
    )
    head: str = Field(
        "",
        description="Folder of a trained reward head (empty: <user dir>/models/pad/<lm>-<vocabulary digest>).",
    )
    rm_weight: float = Field(
        0.8,
        ge=0,
        description="Weight w of the personalized reward (PAD's rm_weight); above 1 hurts fluency.",
    )
    top_k: int = Field(10, ge=1, description="Base candidates re-ranked per token.")
    preference_prompt: bool = Field(
        True,
        description="Also write the preference into the base model's system prompt (as the official runs do).",
    )
    min_comparisons: int = Field(
        10, ge=1, description="Fewest comparisons to fit a preference from a user's comparisons."
    )
    device: str = Field("cpu", description="torch device.")
    dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "float32", description="Weights dtype of the LM (auto: bfloat16 on a CUDA GPU that has it)."
    )


def parse_preference(value: Any, vocab: Any) -> dict[str, float]:
    """A preference profile from a mapping, a list of names (weight 1) or a comma-separated string."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        value = {str(v): 1.0 for v in value}
    if not isinstance(value, Mapping) or not value:
        raise InvalidInputError(
            "preference must be a mapping {attribute: weight}, a list of attributes or a name"
        )
    return vocab.check_weights(value)


class PadGenerator(Generator):
    """PAD with a per-attribute personalized reward head on the frozen base model."""

    name = "pad"
    Config = PadConfig
    config: PadConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._head: Any = None
        self._head_lock = threading.Lock()

    @cached_property
    def vocab(self) -> Any:
        from persona_engine_drift.attributes import load_vocabulary

        return load_vocabulary(self.config.attributes)

    def lm(self, cfg: PadConfig | None = None) -> Any:
        from persona_engine.lm import load_lm

        cfg = cfg or self.config
        return load_lm(cfg.lm, device=cfg.device, dtype=cfg.dtype)

    def head(self) -> tuple[Any, dict[str, Any]]:
        """The trained reward head (loaded once, also when requests arrive together)."""
        with self._head_lock:
            return self._load_head()

    def _load_head(self) -> tuple[Any, dict[str, Any]]:
        from pathlib import Path

        from .trainer import default_head_dir, load_head

        if self._head is None:
            lm = self.lm()
            path = (
                Path(self.config.head).expanduser()
                if self.config.head
                else default_head_dir(lm, self.vocab)
            )
            head, info = load_head(path, lm=lm, vocab=self.vocab)
            self._head = (head.to(next(lm.model.parameters()).device), info)
        return self._head

    def set_head(self, head: Any, info: dict[str, Any]) -> None:
        """Use an in-memory head (tests, benchmarks) instead of loading one (moved to the LM's
        device)."""
        self._head = (head.to(next(self.lm().model.parameters()).device), info)

    def preference(
        self, request: GenerationRequest, cfg: PadConfig, given: Any
    ) -> tuple[dict[str, float], dict[str, Any]]:
        if given is not None:
            return parse_preference(given, self.vocab), {"source": "given"}
        if request.engine is None or not request.user_id:
            raise InvalidInputError(
                "pad needs preference={attribute: weight} or a user with comparisons"
            )
        from persona_engine_drift.generator import DriftGenerator

        drift = DriftGenerator(
            {
                "lm": cfg.lm,
                "attributes": self.config.attributes,
                "min_comparisons": cfg.min_comparisons,
                "device": cfg.device,
                "dtype": cfg.dtype,
            }
        )
        weights, info = drift.fit_weights(request.engine, request.user_id)
        trained = set(self.head()[1].get("trained", []))
        dropped = sorted(n for n, w in weights.items() if w != 0 and n not in trained)
        kept = {n: w for n, w in weights.items() if n in trained}
        return kept, {
            "source": "comparisons (Drift closed form)",
            "untrained_attributes_dropped": dropped,
            **info,
        }

    def weight_matrix(self, preferences: Sequence[Mapping[str, float]]) -> Any:
        import torch

        head, info = self.head()
        trained = set(info.get("trained", head.attributes))
        W = torch.zeros((len(preferences), len(head.attributes)))
        for b, pref in enumerate(preferences):
            for name, w in pref.items():
                if w == 0:
                    continue
                if name not in trained:
                    raise NoModelError(
                        f"the PAD reward head has no trained channel for attribute {name!r} (trained: {sorted(trained)})"
                    )
                W[b, head.attributes.index(name)] = float(w)
        return W

    def token_steps(
        self,
        prompts: Sequence[str],
        preferences: Sequence[Mapping[str, float]],
        cfg: PadConfig | None = None,
    ) -> Iterator[list[int]]:
        """Token ids per step for a batch of prompts, each with its own preference profile."""
        from persona_engine.lm import decode_tokens

        from .processor import PADLogitsProcessor

        cfg = cfg or self.config
        if cfg.rm_weight > 1:
            warnings.warn(
                f"PAD rm_weight={cfg.rm_weight} > 1 extrapolates the reward model; fluency degrades",
                stacklevel=2,
            )
        lm = self.lm(cfg)
        head, _ = self.head()
        W = self.weight_matrix(preferences)
        contexts = [
            [
                lm.chat_ids(
                    p,
                    self.vocab.preference_prompt(pref)
                    if cfg.preference_prompt
                    else self.vocab.neutral_prompt,
                )
            ]
            for p, pref in zip(prompts, preferences)
        ]
        proc = PADLogitsProcessor(lm, head, W, rm_weight=cfg.rm_weight, top_k=cfg.top_k)
        # the processor gets each step's hidden states from decode_tokens: no hook, no lock
        yield from decode_tokens(lm, contexts, cfg, processors=[proc])

    def generate_batch(
        self, prompts: Sequence[str], preferences: Sequence[Any], **options: Any
    ) -> list[str]:
        from persona_engine_drift.generator import request_config

        from persona_engine.lm import collect_texts

        cfg, _ = request_config(self, options, ())
        prefs = [parse_preference(p, self.vocab) for p in preferences]
        if len(prefs) != len(prompts):
            raise InvalidInputError("give one preference per prompt")
        return collect_texts(self.lm(cfg), self.token_steps(prompts, prefs, cfg))

    def _prepare(
        self, request: GenerationRequest
    ) -> tuple[PadConfig, dict[str, float], dict[str, Any]]:
        from persona_engine_drift.generator import request_config

        cfg, own = request_config(self, request.options, REQUEST_KEYS)
        pref, info = self.preference(request, cfg, own.get("preference"))
        info.update(preference=pref, rm_weight=cfg.rm_weight, top_k=cfg.top_k)
        return cfg, pref, info

    def generate(self, request: GenerationRequest) -> GenerationResult:
        from persona_engine.lm import collect_texts

        cfg, pref, info = self._prepare(request)
        text = collect_texts(self.lm(cfg), self.token_steps([request.prompt], [pref], cfg))[0]
        return GenerationResult(texts=[text], info=info)

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        from persona_engine.lm import stream_text

        cfg, pref, _ = self._prepare(request)
        yield from stream_text(self.lm(cfg), self.token_steps([request.prompt], [pref], cfg))
