"""The ``drift`` generator: personalized decoding from a user's comparisons, with no training.

Kim et al. 2025, "Drift: Decoding-time Personalized Alignments with Implicit User Preferences"
(arXiv 2502.14289). The user's 50-100 comparisons give attribute weights in closed form
(:mod:`.rewards`); decoding adds the weighted attribute log-ratios of the small LM to the base
logits over the full vocabulary, scaled by ``1/beta`` (:mod:`.steering`).

Only the ``max_active`` attributes with the largest ``|p_i|`` (and ``|p_i| >= min_weight``) are run
at decoding time: each costs one more row in the per-token batch. Weights can also be given
directly (``weights={"concise": 1.0}``) instead of being fitted from comparisons.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any, Literal

import numpy as np
from pydantic import Field

from persona_engine.errors import InvalidInputError
from persona_engine.generators import GenerationRequest, GenerationResult, Generator
from persona_engine.lm import DEFAULT_LM, DecodingConfig

from .attributes import AttributeVocabulary, load_vocabulary

REQUEST_KEYS = ("weights",)
MODEL_KEYS = (
    "lm",
    "small_lm",
    "small_lm_device",
    "attributes",
    "head",
    "device",
    "dtype",
)  # fixed per generator instance


class DriftConfig(DecodingConfig):
    lm: str = Field(
        DEFAULT_LM, description="Base LM: 'smollm2' (embedded), a local HF folder or a .gguf file."
    )
    small_lm: str = Field(
        "",
        description=(
            "A second, smaller causal LM (local HF folder or .gguf) whose attribute log-ratios "
            "steer the frozen base LM and score the user's comparisons; it must share the base "
            "LM's tokenizer. Empty: the base LM itself, run in the same batch."
        ),
    )
    small_lm_device: str = Field(
        "", description="torch device of the small LM (empty: the base LM's `device`)."
    )
    attributes: list[str] = Field(
        ["psoups", "style"],
        min_length=1,
        description="Attribute vocabularies (profiles/attributes names or YAML paths).",
    )
    beta: float = Field(
        0.5, gt=0, description="Alignment strength: the steering term is scaled by 1/beta."
    )
    max_active: int = Field(
        4, ge=1, description="Attributes with the largest |weight| used while decoding."
    )
    min_weight: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Attributes with |weight| below this are not used while decoding.",
    )
    min_share: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Weight fitting: drop attributes whose |W-L| is below this share of the largest.",
    )
    center: bool = Field(
        True,
        description="Weight fitting: remove the attributes' common mode (every steering prompt vs the neutral one) first.",
    )
    min_comparisons: int = Field(
        10, ge=1, description="Fewest comparisons a user needs for fitted weights."
    )
    max_response_tokens: int = Field(
        32, ge=1, description="Tokens of each compared response scored for the attribute rewards."
    )
    device: str = Field("cpu", description="torch device.")
    dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "float32",
        description="Weights dtype of the LMs (auto: bfloat16 on a CUDA GPU that has it).",
    )


def request_config(
    gen: Generator, options: Mapping[str, Any], extra: Sequence[str]
) -> tuple[Any, dict[str, Any]]:
    """The generator's config with the request's options applied, and the non-config options."""
    from persona_engine.config import make_config

    own = {k: v for k, v in options.items() if k in extra}
    rest = {k: v for k, v in options.items() if k not in extra}
    fixed = sorted(set(rest) & set(MODEL_KEYS))
    if fixed:
        raise InvalidInputError(
            f"{', '.join(fixed)}: generator settings, not request options; pass them in the generator config"
        )
    return (
        make_config(type(gen.config), gen.config.model_dump(), **rest) if rest else gen.config
    ), own


class DriftGenerator(Generator):
    """Drift: attribute weights from the user's comparisons, steering over the full vocabulary."""

    name = "drift"
    Config = DriftConfig
    config: DriftConfig

    @cached_property
    def vocab(self) -> AttributeVocabulary:
        return load_vocabulary(self.config.attributes)

    def models(self, cfg: DriftConfig | None = None) -> tuple[Any, Any]:
        from persona_engine.lm import load_lm

        cfg = cfg or self.config
        lm = load_lm(cfg.lm, device=cfg.device, dtype=cfg.dtype)
        if not cfg.small_lm:
            return lm, lm
        device = cfg.small_lm_device or cfg.device
        slm = load_lm(cfg.small_lm, device=device, dtype=cfg.dtype)
        from .steering import check_same_vocabulary

        check_same_vocabulary(lm, slm)
        return lm, slm

    # -- user weights ------------------------------------------------------------------------
    def fit_weights(
        self, engine: Any, user_id: str, cfg: DriftConfig | None = None
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """Closed-form attribute weights of ``user_id`` from their stored text comparisons."""
        from persona_engine.errors import UnknownUserError

        from .rewards import cached_attribute_rewards, drift_weights, pairwise_accuracy

        cfg = cfg or self.config
        if not engine.store.has_user(user_id):
            raise UnknownUserError(f"unknown user {user_id!r}")
        comps = [
            c for c in engine.store.comparisons(user_id) if getattr(c, "kind", "text") == "text"
        ]
        if len(comps) < cfg.min_comparisons:
            raise InvalidInputError(
                f"drift needs at least {cfg.min_comparisons} text comparisons of {user_id!r} (has {len(comps)}), "
                "or explicit weights (option weights={attribute: weight})"
            )
        _, slm = self.models(cfg)
        prompts = [c.prompt for c in comps]
        rewards = cached_attribute_rewards(
            engine.store,
            slm,
            self.vocab,
            prompts + prompts,
            [c.chosen for c in comps] + [c.rejected for c in comps],
            max_tokens=cfg.max_response_tokens,
        )
        chosen, rejected = rewards[: len(comps)], rewards[len(comps) :]
        strength = np.array([0.0 if c.tie else c.strength for c in comps], dtype=np.float32)
        p = drift_weights(chosen, rejected, strength, min_share=cfg.min_share, center=cfg.center)
        if cfg.center:
            chosen, rejected = (
                chosen - chosen.mean(1, keepdims=True),
                rejected - rejected.mean(1, keepdims=True),
            )
        info = {"comparisons": len(comps), "train_accuracy": pairwise_accuracy(p, chosen, rejected)}
        return dict(zip(self.vocab.names, (float(x) for x in p))), info

    def resolve_weights(
        self, request: GenerationRequest, cfg: DriftConfig, given: Any
    ) -> tuple[dict[str, float], dict[str, Any]]:
        if given is not None:
            if not isinstance(given, Mapping) or not given:
                raise InvalidInputError("weights must be a non-empty mapping {attribute: weight}")
            return self.vocab.check_weights(given), {"source": "given"}
        if request.engine is None or not request.user_id:
            raise InvalidInputError(
                "drift needs a user with comparisons (through the engine) or weights={attribute: weight}"
            )
        weights, info = self.fit_weights(request.engine, request.user_id, cfg)
        return weights, {"source": "comparisons", **info}

    def active(self, weights: Mapping[str, float], cfg: DriftConfig) -> list[tuple[str, float]]:
        """The attributes run while decoding: the ``max_active`` largest ``|p_i| >= min_weight``."""
        ranked = sorted(
            ((n, w) for n, w in weights.items() if abs(w) >= cfg.min_weight and w != 0),
            key=lambda x: -abs(x[1]),
        )
        return ranked[: cfg.max_active]

    # -- decoding ----------------------------------------------------------------------------
    def token_steps(
        self,
        prompts: Sequence[str],
        weights: Sequence[Mapping[str, float]],
        cfg: DriftConfig | None = None,
    ) -> Iterator[list[int]]:
        """Token ids per step for a batch of prompts, each with its own attribute weights."""
        import torch

        from persona_engine.lm import decode_tokens

        from .steering import DriftLogitsProcessor, check_same_vocabulary, drift_combine

        cfg = cfg or self.config
        lm, slm = self.models(cfg)
        check_same_vocabulary(lm, slm)
        active = [self.active(w, cfg) for w in weights]
        m = max((len(a) for a in active), default=0)
        neutral = self.vocab.neutral_prompt
        base = [[lm.chat_ids(p, neutral)] for p in prompts]
        if m == 0:
            return decode_tokens(lm, base, cfg)
        W = torch.zeros((len(prompts), m))
        steer: list[list[list[int]]] = []
        for b, (prompt, act) in enumerate(zip(prompts, active)):
            rows = [slm.chat_ids(prompt, neutral)]
            for j in range(m):  # prompts with fewer active attributes get zero-weight neutral rows
                if j < len(act):
                    rows.append(slm.chat_ids(prompt, self.vocab.get(act[j][0]).system_prompt))
                    W[b, j] = act[j][1]
                else:
                    rows.append(rows[0])
            steer.append(rows)
        if slm is lm:
            return decode_tokens(lm, steer, cfg, combine=drift_combine(W, cfg.beta))
        return decode_tokens(
            lm, base, cfg, processors=[DriftLogitsProcessor(slm, steer, W, cfg.beta)]
        )

    def generate_batch(
        self, prompts: Sequence[str], weights: Sequence[Mapping[str, float]], **options: Any
    ) -> list[str]:
        """Texts for several prompts at once (one batch), each with given attribute weights."""
        from persona_engine.lm import collect_texts

        cfg, _ = request_config(self, options, ())
        weights = [self.vocab.check_weights(w) for w in weights]
        if len(weights) != len(prompts):
            raise InvalidInputError("give one weight mapping per prompt")
        return collect_texts(self.models(cfg)[0], self.token_steps(prompts, weights, cfg))

    def _prepare(
        self, request: GenerationRequest
    ) -> tuple[DriftConfig, dict[str, float], dict[str, Any]]:
        cfg, own = request_config(self, request.options, REQUEST_KEYS)
        weights, info = self.resolve_weights(request, cfg, own.get("weights"))
        info.update(weights=weights, active=dict(self.active(weights, cfg)), beta=cfg.beta)
        return cfg, weights, info

    def generate(self, request: GenerationRequest) -> GenerationResult:
        from persona_engine.lm import collect_texts

        cfg, weights, info = self._prepare(request)
        started = time.perf_counter()
        text = collect_texts(
            self.models(cfg)[0], self.token_steps([request.prompt], [weights], cfg)
        )[0]
        info["seconds"] = round(time.perf_counter() - started, 3)
        return GenerationResult(texts=[text], info=info)

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        from persona_engine.lm import stream_text

        cfg, weights, _ = self._prepare(request)
        yield from stream_text(
            self.models(cfg)[0], self.token_steps([request.prompt], [weights], cfg)
        )
