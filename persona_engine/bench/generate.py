"""``persona bench generate``: personalized text generation (PAD, Drift) against its baselines.

Protocol, for each seed of ``seeds``:

1. Simulated users (``USERS``): both sides of each P-SOUPS dimension and two mixed profiles. A
   user prefers one or two P-SOUPS options; each option has a *training* judge (what the user's
   labels are made from, :mod:`.generate_judges`) and a different *evaluation* judge (what the
   figures are measured with, :mod:`.eval_judges`), so no method is scored by the judge its
   training labels came from.
2. A pool of the LM's own answers to training prompts (``profiles/attributes/prompts/general.yaml``,
   not the evaluation prompts), sampled under the neutral and the attribute system prompts, gives
   each user ``comparisons`` pairs labelled by their training judges (Bradley-Terry noise),
   recorded in an engine store.
3. Drift fits each user's attribute weights from those comparisons (closed form). PAD's
   personalized reward head is trained with PAD's DPO objective on the same stored comparisons,
   each labelled with its user's preference vector, through ``persona pad-train --from-store``'s
   own path (:func:`persona_engine_pad.pairs.collect_pairs`, then
   :func:`persona_engine_pad.trainer.train_reward_head`).
4. On the evaluation prompts (the first ``prompts`` of the 50 Koala prompts of P-SOUPS), greedy
   decoding with one setting for every method (:mod:`.generate_methods`): plain, prompt-only,
   guidance on the preference prompt at each ``guidance_scales`` g, best-of-N with the user's
   reward model, PAD at each ``pad_weights`` w and Drift at each ``drift_betas`` beta. The greedy
   baselines do not depend on the seed and are decoded once.
5. Every answer is measured by the evaluation judges; :mod:`.generate_report` turns the per-prompt
   figures into per-user paired differences with CIs over prompts and seeds, and
   :mod:`.generate_plot` draws the strength sweeps.
6. Per-token latency at batch 1 against plain decoding through the same loop (median of runs).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..config import PluginConfig
from ..errors import InvalidInputError
from .generate_judges import FriendlinessJudge, judge_texts
from .generate_users import USERS, fit_drift, pool_and_scores, train_pad, user_comparisons

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "psoups"


class GenerateBenchConfig(PluginConfig):
    lm: str = Field("smollm2", description="Base LM (also Drift's small LM).")
    device: str = Field(
        "cpu", description="torch device of every LM the bench runs (e.g. cuda; auto: cuda if any)."
    )
    dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "float32",
        description="Weights dtype of those LMs (auto: bfloat16 on a CUDA GPU that has it).",
    )
    data: str = Field(str(DEFAULT_DATA), description="Folder with koala_eval_50.json (P-SOUPS).")
    users: list[str] = Field(
        list(USERS), min_length=1, description="Simulated users (keys of USERS)."
    )
    seeds: list[int] = Field(
        [0], min_length=1, description="Seeds (answer pool, labels, PAD head, best-of-N samples)."
    )
    prompts: int = Field(5, ge=0, le=50, description="Evaluation prompts (first N of 50; 0: all).")
    train_prompts: int = Field(
        20, ge=2, description="Training prompts of the answer pool the users compare."
    )
    samples: int = Field(1, ge=1, description="Pool answers per training prompt and system prompt.")
    comparisons: int = Field(50, ge=10, description="Comparisons per user (Drift's 50-100).")
    label_noise: float = Field(
        0.5, gt=0, description="Bradley-Terry temperature on standardised training-judge scores."
    )
    max_new_tokens: int = Field(
        96, ge=4, description="Tokens per evaluation answer (readability needs >= 96)."
    )
    min_words: int = Field(
        60, ge=1, description="Fewest words of an answer that gets a readability grade."
    )
    pool_tokens: int = Field(
        48, ge=4, description="Tokens per pool answer (scored for Drift's rewards and PAD's DPO)."
    )
    repetition_penalty: float = Field(1.2, ge=1.0, description="Same for every method.")
    objective: Literal["dpo", "distill"] = Field(
        "dpo",
        description="PAD head objective: dpo on the users' pairs (PAD as published); distill only "
        "for comparison with earlier runs.",
    )
    dpo_beta: float = Field(0.1, gt=0, description="PAD's DPO beta.")
    dpo_epochs: int = Field(20, ge=1, description="Most epochs of PAD's DPO training.")
    rank: int = Field(8, ge=1, description="Rank of each PAD reward channel.")
    top_k: int = Field(10, ge=2, description="PAD candidates per token.")
    rm_weight: float = Field(1.0, gt=0, description="PAD's reported operating point w.")
    pad_weights: list[float] = Field([0.5, 1.0, 2.0], description="PAD strengths w swept.")
    beta: float = Field(0.5, gt=0, description="Drift's reported operating point beta.")
    drift_betas: list[float] = Field([1.0, 0.5, 0.25], description="Drift betas swept.")
    max_active: int = Field(4, ge=1, description="Drift attributes run while decoding.")
    guidance_scales: list[float] = Field(
        [1.5, 2.0, 3.0], description="Guidance strengths g swept (g = 1 is prompt-only)."
    )
    bestofn: int = Field(4, ge=1, le=64, description="Best-of-N: N candidates per prompt.")
    relevance_tolerance: float = Field(
        0.05, ge=0, description="Relevance allowed below plain's, as a share of plain's."
    )
    fluency_bound: float = Field(2.0, gt=0, description="Perplexity allowed, as a ratio to plain.")
    latency_tokens: int = Field(16, ge=2, description="Tokens per latency measurement.")
    latency_reps: int = Field(3, ge=1, description="Latency runs (the median is reported).")
    batch_prompts: int = Field(5, ge=1, description="Evaluation prompts decoded per batch.")
    keep_texts: bool = Field(True, description="Keep every answer of the first seed in the JSON.")
    reuse_pool: bool = Field(
        True,
        description="Reuse the cached answer pool and its scores from an earlier run with the same settings.",
    )


def sweeps(cfg: GenerateBenchConfig) -> dict[str, list[float]]:
    """Strengths of each swept family, the operating points included."""
    return {
        "pad": sorted({*cfg.pad_weights, cfg.rm_weight}),
        "drift": sorted({*cfg.drift_betas, cfg.beta}, reverse=True),
        "guidance": sorted({*cfg.guidance_scales} - {1.0}),
    }


def _eval_prompts(cfg: GenerateBenchConfig) -> list[str]:
    path = Path(cfg.data) / "koala_eval_50.json"
    if not path.is_file():
        raise InvalidInputError(f"no {path}: pass --data pointing at the P-SOUPS folder")
    prompts = [d["prompt"] for d in json.loads(path.read_text())]
    return prompts[: cfg.prompts] if cfg.prompts else prompts


def _measure_all(
    judges: Any, prompts: list[str], texts: dict[str, dict[str, list[str]]]
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Every method's and user's answers measured in one call, so the answers to one prompt
    share its prefix in the base LM's scoring pass and the encoder sees one large batch."""
    keys = [(m, u) for m, per in texts.items() for u in per]
    flat_p = [p for _ in keys for p in prompts]
    flat_a = [a for m, u in keys for a in texts[m][u]]
    measured = judges.measure(flat_p, flat_a)
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {m: {} for m in texts}
    for i, (m, u) in enumerate(keys):
        part = slice(i * len(prompts), (i + 1) * len(prompts))
        out[m][u] = {k: v[part] for k, v in measured.items()}
    return out


def _as_lists(measured: dict[str, np.ndarray]) -> dict[str, list[float | None]]:
    return {
        k: [None if not np.isfinite(x) else round(float(x), 4) for x in v]
        for k, v in measured.items()
    }


def run_generate_bench(
    cfg: GenerateBenchConfig, *, home: Path, progress: bool = True
) -> dict[str, Any]:
    """Run the whole benchmark; ``home`` holds one engine store per seed."""
    from persona_engine_drift.attributes import load_prompts, load_vocabulary
    from persona_engine_drift.generator import DriftGenerator
    from persona_engine_drift.rewards import reward_cache_key, reward_hash
    from persona_engine_pad.generator import PadGenerator

    from ..engine import Engine
    from ..lm import DecodingConfig, load_lm, resolve_lm_device, resolve_lm_dtype
    from ..plugins import get_encoder
    from .eval_judges import EvaluationJudges
    from .generate_methods import (
        MethodDecoders,
        bestofn_candidates,
        bestofn_pick,
        latency,
        method_key,
    )
    from .generate_report import summarise_results

    unknown = [u for u in cfg.users if u not in USERS]
    if unknown:
        raise InvalidInputError(f"unknown bench users {unknown}; known: {', '.join(USERS)}")
    seconds: dict[str, float] = {}
    t0, cpu0 = time.perf_counter(), time.process_time()

    def say(line: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - t0:6.0f} s] {line}", flush=True)

    def lap(name: str, since: float) -> None:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - since

    prompts, train_prompts = _eval_prompts(cfg), load_prompts("general")[: cfg.train_prompts]
    # where every LM of the bench runs, resolved once so that every generator shares one copy
    on = {
        "device": resolve_lm_device(cfg.device),
        "dtype": resolve_lm_dtype(cfg.dtype, cfg.device),
    }
    lm, vocab = load_lm(cfg.lm, **on), load_vocabulary(["psoups"])
    encoder = get_encoder("minilm")()
    training_judge = FriendlinessJudge(encoder)
    judges = EvaluationJudges(
        lm, vocab.neutral_prompt, encoder, max_tokens=cfg.max_new_tokens, min_words=cfg.min_words
    )
    dec = DecodingConfig(
        max_new_tokens=cfg.max_new_tokens, repetition_penalty=cfg.repetition_penalty
    )
    common = {"lm": cfg.lm, "attributes": ["psoups"], **on, **dec.model_dump()}
    drift = DriftGenerator(
        {
            **common,
            "beta": cfg.beta,
            "max_active": cfg.max_active,
            "max_response_tokens": cfg.pool_tokens,
        }
    )
    pad = PadGenerator({**common, "rm_weight": cfg.rm_weight, "top_k": cfg.top_k})
    decoders = MethodDecoders(lm, vocab, dec, drift, pad)
    strengths = sweeps(cfg)
    profiles = {u: USERS[u]["profile"] for u in cfg.users}
    attrs = sorted(
        {a for p in profiles.values() for a in p}
        | {vocab.get(a).opposite or a for p in profiles.values() for a in p}
    )
    lap("load", t0)

    def by_rows(decode: Any) -> dict[str, list[str]]:
        """``decode(prompts, users)`` over every (user, prompt) row in batches of prompts."""
        out: dict[str, list[str]] = {u: [] for u in cfg.users}
        for start in range(0, len(prompts), cfg.batch_prompts):
            chunk = prompts[start : start + cfg.batch_prompts]
            rows = [(u, p) for u in cfg.users for p in chunk]
            for (u, _), text in zip(rows, decode([p for _, p in rows], [u for u, _ in rows])):
                out[u].append(text)
        return out

    # the greedy baselines: the same for every seed
    t = time.perf_counter()
    say(f"decoding the baselines on {len(prompts)} prompts")
    shared: dict[str, dict[str, list[str]]] = {"plain": {"*": decoders.plain(prompts)}}
    for g in [1.0, *strengths["guidance"]]:
        key = "prompt" if g == 1.0 else method_key("guidance", g)
        shared[key] = by_rows(
            lambda ps, us, g=g: decoders.guidance(ps, [profiles[u] for u in us], g)
        )
    lap("decode", t)
    t = time.perf_counter()
    say("evaluation judges of the baselines")
    shared_scores = _measure_all(judges, prompts, shared)
    lap("judge", t)

    scores: dict[str, Any] = {}
    users_info: dict[str, Any] = {u: {**USERS[u], "per_seed": []} for u in cfg.users}
    pad_training: list[dict[str, Any]] = []
    kept_texts: dict[str, Any] = {}
    pools: list[dict[str, Any]] = []
    for seed in cfg.seeds:
        rng = np.random.default_rng(seed)
        t = time.perf_counter()
        pool, mean_lp, states, cached = pool_and_scores(
            cfg, seed, lm, vocab, train_prompts, attrs, say
        )
        pool_scores = judge_texts([a for _, a in pool], training_judge)
        pools.append({"seed": seed, "answers": len(pool), "cached": cached})
        lap("pool_and_scores", t)
        engine = Engine(home=home / f"seed-{seed}", encoder="hashing")
        rewards = (mean_lp[1:] - mean_lp[:1]).T
        engine.store.put_features(
            reward_cache_key(lm, vocab, cfg.pool_tokens),
            {reward_hash(p, a): rewards[i] for i, (p, a) in enumerate(pool)},
        )
        t = time.perf_counter()
        fitted: dict[str, dict[str, float]] = {}
        for u in cfg.users:
            engine.record(user_comparisons(u, pool, pool_scores, cfg, rng))
            info = fit_drift(drift, engine, u, vocab)
            fitted[u] = info["weights"]
            users_info[u]["per_seed"].append({"seed": seed, **info})
        lap("drift_fit", t)
        t = time.perf_counter()
        say(f"seed {seed}: training PAD's head ({cfg.objective})")
        head, meta = train_pad(cfg, seed, lm, vocab, engine, states)
        pad.set_head(head, meta)
        pad_training.append({"seed": seed, **meta})
        lap("pad_train", t)

        t = time.perf_counter()
        texts: dict[str, dict[str, list[str]]] = dict(shared)
        for w in strengths["pad"]:
            say(f"seed {seed}: decoding PAD w={w:g}")
            texts[method_key("pad", w)] = by_rows(
                lambda ps, us, w=w: decoders.pad_texts(ps, [profiles[u] for u in us], w)
            )
        for b in strengths["drift"]:
            say(f"seed {seed}: decoding Drift beta={b:g}")
            texts[method_key("drift", b)] = by_rows(
                lambda ps, us, b=b, f=fitted: decoders.drift_texts(ps, [f[u] for u in us], b)
            )
        say(f"seed {seed}: best-of-{cfg.bestofn}")
        cands = bestofn_candidates(
            cfg.lm, vocab.neutral_prompt, prompts, dec, n=cfg.bestofn, seed=seed, on=on
        )
        active = {u: dict(drift.active(fitted[u], drift.config)) for u in cfg.users}
        texts["bestofn"] = bestofn_pick(
            lm, vocab, prompts, cands, active, max_tokens=cfg.pool_tokens
        )
        lap("decode", t)
        t = time.perf_counter()
        say(f"seed {seed}: evaluation judges")
        own = {m: per for m, per in texts.items() if m not in shared}
        seed_scores = {**shared_scores, **_measure_all(judges, prompts, own)}
        scores[str(seed)] = {
            m: {u: _as_lists(x) for u, x in per.items()} for m, per in seed_scores.items()
        }
        lap("judge", t)
        if cfg.keep_texts and not kept_texts:
            kept_texts = texts

    t = time.perf_counter()
    say("latency")
    u0 = cfg.users[0]
    lat = latency(
        decoders,
        prompts[0],
        profiles[u0],
        users_info[u0]["per_seed"][-1]["weights"],
        tokens=cfg.latency_tokens,
        reps=cfg.latency_reps,
        beta=cfg.beta,
        rm_weight=cfg.rm_weight,
        scale=strengths["guidance"][0] if strengths["guidance"] else 1.0,
    )
    lat["user"] = u0
    lap("latency", t)
    seconds["total"] = time.perf_counter() - t0
    seconds["process_cpu"] = time.process_time() - cpu0
    result: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "sweeps": strengths,
        "prompts": prompts,
        "users": users_info,
        "scores": scores,
        "pad_training": pad_training,
        "latency": lat,
        "texts": kept_texts,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "setup": {
            "pools": pools,
            "eval_prompts": len(prompts),
            "train_prompts": len(train_prompts),
            "lm": lm.name,
            "attributes": vocab.names,
            "training_judges": {"friendliness_loo_accuracy": round(training_judge.loo_accuracy, 3)},
        },
    }
    result["summary"] = summarise_results(result)
    return result
