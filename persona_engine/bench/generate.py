"""``persona bench generate``: personalized text generation (Drift, PAD) on the P-SOUPS prompts.

Protocol (one run, one seed):

1. Simulated users are attribute profiles (``USERS``): each prefers one P-SOUPS option and is
   judged by one measurable attribute (:mod:`.generate_judges`). Opposite users come in pairs.
2. A pool of the LM's own answers to training prompts (``profiles/attributes/prompts/general.yaml``,
   not the evaluation prompts), sampled under the neutral and the attribute system prompts, gives
   each user ``comparisons`` pairs labelled by their judge (Bradley-Terry noise). They are stored
   in an engine; ``drift`` fits the user's weights from them (closed form), unaware of the profile.
3. One scoring pass of the pool under every attribute prompt yields Drift's attribute rewards and
   the token states on which PAD's reward-head channels are fitted (see persona_engine_pad.trainer).
4. On the evaluation prompts (the first ``prompts`` of the 50 Koala prompts of P-SOUPS), greedy
   decoding with the same settings for: plain (base model, neutral prompt), prompt-only (the
   user's preference written into the system prompt), drift (fitted weights), pad (the profile).
5. Checks per user and method: the target attribute moves the preferred way against plain and
   against prompt-only; opposite users end apart; off-target attributes move less than
   ``off_target_tolerance`` standard deviations of the plain outputs; fluency: the base model's
   perplexity of the output (neutral prompt) is at most ``fluency_bound`` times prompt-only's.
6. Per-token latency at batch 1 against plain decoding through the same loop.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ..config import PluginConfig
from ..errors import InvalidInputError
from .generate_judges import FriendlinessJudge, judge_texts
from .generate_report import summarise_results

USERS: dict[str, dict[str, Any]] = {
    "elementary": {
        "profile": {"elementary": 1.0},
        "judge": "reading_grade",
        "direction": -1,
        "opposite": "phd",
    },
    "phd": {
        "profile": {"phd": 1.0},
        "judge": "reading_grade",
        "direction": 1,
        "opposite": "elementary",
    },
    "friendly": {
        "profile": {"friendly": 1.0},
        "judge": "friendliness",
        "direction": 1,
        "opposite": "unfriendly",
    },
    "unfriendly": {
        "profile": {"unfriendly": 1.0},
        "judge": "friendliness",
        "direction": -1,
        "opposite": "friendly",
    },
    "concise": {
        "profile": {"concise": 1.0},
        "judge": "words",
        "direction": -1,
        "opposite": "informative",
    },
    "informative": {
        "profile": {"informative": 1.0},
        "judge": "words",
        "direction": 1,
        "opposite": "concise",
    },
}
METHODS = ["plain", "prompt", "drift", "pad"]
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "psoups"


class GenerateBenchConfig(PluginConfig):
    lm: str = Field("smollm2", description="Base LM (also Drift's small LM).")
    data: str = Field(str(DEFAULT_DATA), description="Folder with koala_eval_50.json (P-SOUPS).")
    users: list[str] = Field(
        ["elementary", "phd", "friendly", "unfriendly"],
        min_length=1,
        description="Simulated users (keys of USERS).",
    )
    prompts: int = Field(5, ge=0, le=50, description="Evaluation prompts (first N of 50; 0: all).")
    train_prompts: int = Field(
        20,
        ge=2,
        description="Training prompts for the users' comparisons and the PAD head (a pool of about 5 answers each).",
    )
    samples: int = Field(1, ge=1, description="Pool answers per training prompt and system prompt.")
    comparisons: int = Field(50, ge=10, description="Comparisons per user (Drift's 50-100).")
    label_noise: float = Field(
        0.5, gt=0, description="Bradley-Terry temperature on standardised judge scores."
    )
    max_new_tokens: int = Field(32, ge=4, description="Tokens per evaluation answer.")
    pool_tokens: int = Field(
        24, ge=4, description="Tokens per pool answer (and scored for the rewards)."
    )
    repetition_penalty: float = Field(1.2, ge=1.0, description="Same for every method.")
    beta: float = Field(0.5, gt=0, description="Drift strength 1/beta.")
    max_active: int = Field(
        4, ge=1, description="Drift attributes run while decoding (the generator's default)."
    )
    rm_weight: float = Field(1.0, ge=0, description="PAD reward weight w.")
    top_k: int = Field(10, ge=2, description="PAD candidates per token.")
    off_target_tolerance: float = Field(
        1.0, gt=0, description="Off-target shift allowed, in SDs of the plain outputs."
    )
    fluency_bound: float = Field(
        2.0, gt=0, description="Allowed perplexity ratio against prompt-only."
    )
    latency_tokens: int = Field(16, ge=2, description="Tokens per latency measurement.")
    latency_reps: int = Field(
        3, ge=1, description="Latency repetitions (interleaved across methods)."
    )
    batch_prompts: int = Field(5, ge=1, description="Evaluation prompts decoded per batch.")
    seed: int = Field(0, description="Seed of sampling, pairs and labels.")
    reuse_pool: bool = Field(
        True,
        description="Reuse the cached answer pool and its scores from an earlier run with the same settings.",
    )


def _eval_prompts(cfg: GenerateBenchConfig) -> list[str]:
    path = Path(cfg.data) / "koala_eval_50.json"
    if not path.is_file():
        raise InvalidInputError(f"no {path}: pass --data pointing at the P-SOUPS folder")
    prompts = [d["prompt"] for d in json.loads(path.read_text())]
    return prompts[: cfg.prompts] if cfg.prompts else prompts


def _user_comparisons(
    user: str,
    spec: dict[str, Any],
    pool: list[tuple[str, str]],
    scores: dict[str, np.ndarray],
    cfg: GenerateBenchConfig,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Pairs of pool answers to the same prompt, labelled by the user's judge with BT noise."""
    z = scores[spec["judge"]]
    z = spec["direction"] * (z - np.nanmean(z)) / (np.nanstd(z) + 1e-9)
    by_prompt: dict[str, list[int]] = {}
    for i, (p, _) in enumerate(pool):
        by_prompt.setdefault(p, []).append(i)
    pairs = [
        (a, b)
        for rows in by_prompt.values()
        for ai, a in enumerate(rows)
        for b in rows[ai + 1 :]
        if pool[a][1] != pool[b][1]
    ]
    picked = rng.permutation(len(pairs))[: cfg.comparisons]
    comps = []
    for k in picked:
        a, b = pairs[k]
        a_wins = rng.random() < 1.0 / (1.0 + math.exp(-(z[a] - z[b]) / cfg.label_noise))
        w, lo = (a, b) if a_wins else (b, a)
        comps.append(
            {
                "user_id": user,
                "prompt": pool[w][0],
                "chosen": pool[w][1],
                "rejected": pool[lo][1],
                "source": "bench-generate",
            }
        )
    return comps


def _timed_steps(steps: Any) -> tuple[list[float], int]:
    times, last, n = [], time.perf_counter(), 0
    for _ in steps:
        now = time.perf_counter()
        times.append(now - last)
        last, n = now, n + 1
    return times, n


def _latency(
    cfg: GenerateBenchConfig,
    lm: Any,
    vocab: Any,
    drift: Any,
    pad: Any,
    prompt: str,
    weights: dict,
    profile: dict,
) -> dict[str, Any]:
    from ..lm import DecodingConfig, decode_tokens

    dec = {"max_new_tokens": cfg.latency_tokens, "repetition_penalty": cfg.repetition_penalty}
    runs = {
        "plain": lambda: decode_tokens(
            lm, [[lm.chat_ids(prompt, vocab.neutral_prompt)]], DecodingConfig(**dec)
        ),
        "drift": lambda: drift.token_steps(
            [prompt], [weights], drift.config.model_copy(update=dec)
        ),
        "drift_1": lambda: drift.token_steps(
            [prompt], [weights], drift.config.model_copy(update={**dec, "max_active": 1})
        ),
        "pad": lambda: pad.token_steps([prompt], [profile], pad.config.model_copy(update=dec)),
    }
    per: dict[str, list[tuple[float, float, int]]] = {m: [] for m in runs}
    for _ in range(cfg.latency_reps):
        for name, make in runs.items():
            times, n = _timed_steps(make())
            per[name].append(
                (
                    sum(times) / n * 1000,
                    float(np.mean(times[1:])) * 1000 if n > 1 else float("nan"),
                    n,
                )
            )
    # a shared machine: other jobs only ever add time, so the best of the repeated runs is the
    # least disturbed estimate (as timeit does); the medians are kept beside it
    out: dict[str, Any] = {}
    for name, rows in per.items():
        out[name] = {
            "ms_per_token": round(float(min(r[0] for r in rows)), 2),
            "decode_ms_per_token": round(float(min(r[1] for r in rows)), 2),
            "decode_ms_per_token_median": round(float(np.median([r[1] for r in rows])), 2),
            "tokens": rows[0][2],
        }
    for name in ("drift", "drift_1", "pad"):
        out[name]["overhead_vs_plain"] = round(
            out[name]["decode_ms_per_token"] / out["plain"]["decode_ms_per_token"], 2
        )
    out["drift"]["rows_per_step"] = 1 + len(drift.active(weights, drift.config))
    out["drift_1"]["rows_per_step"] = 2
    return out


def _pool_and_scores(
    cfg: GenerateBenchConfig,
    lm: Any,
    vocab: Any,
    train_prompts: list[str],
    attrs: list[str],
    say: Any,
) -> tuple[list[tuple[str, str]], np.ndarray, list[Any], bool]:
    """The answer pool (steps 1-2) and its one scoring pass under every system prompt (step 3):
    Drift's attribute rewards and PAD's token states. Kept in ``<user dir>/cache/bench_generate``
    (keyed by everything they depend on) unless ``cfg.reuse_pool`` is off."""
    import hashlib

    import torch
    from persona_engine_drift.rewards import score_answers
    from persona_engine_pad.trainer import contrast_responses

    from ..paths import cache_dir

    key = json.dumps(
        [lm.id, vocab.digest, train_prompts, attrs, cfg.samples, cfg.pool_tokens, cfg.seed]
    )
    path = (
        cache_dir() / "bench_generate" / f"pool-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    )
    if cfg.reuse_pool and path.is_file():
        saved = np.load(path)
        pool = [tuple(x) for x in json.loads(str(saved["pool"]))]
        return pool, saved["mean_lp"], [torch.from_numpy(h) for h in saved["states"]], True  # type: ignore[misc]
    say(
        f"sampling the answer pool: {len(train_prompts)} prompts x {len(attrs) + 1} system prompts x {cfg.samples}"
    )
    responses = contrast_responses(
        lm,
        vocab,
        attrs,
        train_prompts,
        samples=cfg.samples,
        max_new_tokens=cfg.pool_tokens,
        temperature=0.8,
        seed=cfg.seed,
    )
    pool = list(
        dict.fromkeys(
            (p, a)
            for c in responses
            for p, answers in responses[c].items()
            for a in answers
            if a.strip()
        )
    )
    say(f"scoring {len(pool)} pool answers under {len(vocab.attributes) + 1} system prompts")
    systems = [vocab.neutral_prompt, *(a.system_prompt for a in vocab.attributes)]
    mean_lp, states, _ = score_answers(
        lm,
        systems,
        [p for p, _ in pool],
        [a for _, a in pool],
        max_tokens=cfg.pool_tokens,
        with_hidden=True,
    )
    assert states is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, pool=json.dumps(pool), mean_lp=mean_lp, states=torch.stack(states).numpy())
    return pool, mean_lp, states, False


def run_generate_bench(
    cfg: GenerateBenchConfig, *, home: Path, progress: bool = True
) -> dict[str, Any]:
    """Run the whole benchmark; ``home`` holds the engine store of the simulated users."""
    from persona_engine_drift.attributes import load_prompts, load_vocabulary
    from persona_engine_drift.generator import DriftGenerator
    from persona_engine_drift.rewards import reward_cache_key, reward_hash, score_answers
    from persona_engine_pad.generator import PadGenerator
    from persona_engine_pad.head import PersonalizedRewardHead
    from persona_engine_pad.trainer import PadTrainConfig, reward_targets, train_channel

    from ..engine import Engine
    from ..lm import DecodingConfig, collect_texts, decode_tokens, load_lm

    unknown = [u for u in cfg.users if u not in USERS]
    if unknown:
        raise InvalidInputError(f"unknown bench users {unknown}; known: {', '.join(USERS)}")
    say = print if progress else (lambda *a, **k: None)
    seconds: dict[str, float] = {}
    t0, cpu0 = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(cfg.seed)
    prompts, train_prompts = _eval_prompts(cfg), load_prompts("general")[: cfg.train_prompts]
    lm, vocab = load_lm(cfg.lm), load_vocabulary(["psoups"])
    judge = FriendlinessJudge()
    seconds["load"] = time.perf_counter() - t0

    # 1-2. the pool of answers and the users' comparisons
    t = time.perf_counter()
    attrs = sorted(
        {a for u in cfg.users for a in USERS[u]["profile"]}
        | {vocab.get(a).opposite or a for u in cfg.users for a in USERS[u]["profile"]}
    )
    pool, mean_lp, states, cached = _pool_and_scores(cfg, lm, vocab, train_prompts, attrs, say)
    pool_scores = judge_texts([a for _, a in pool], judge)
    seconds["pool_and_scores"] = time.perf_counter() - t
    rewards = (mean_lp[1:] - mean_lp[:1]).T
    engine = Engine(home=home, encoder="hashing")
    engine.store.put_features(
        reward_cache_key(lm, vocab, cfg.pool_tokens),
        {reward_hash(p, a): rewards[i] for i, (p, a) in enumerate(pool)},
    )

    t = time.perf_counter()
    common = {
        "lm": cfg.lm,
        "attributes": ["psoups"],
        "max_new_tokens": cfg.max_new_tokens,
        "repetition_penalty": cfg.repetition_penalty,
    }
    drift = DriftGenerator(
        {
            **common,
            "beta": cfg.beta,
            "max_active": cfg.max_active,
            "max_response_tokens": cfg.pool_tokens,
        }
    )
    users: dict[str, Any] = {}
    for u in cfg.users:
        spec = USERS[u]
        engine.record(_user_comparisons(u, spec, pool, pool_scores, cfg, rng))
        weights, info = drift.fit_weights(engine, u)
        top = max(weights, key=lambda k: abs(weights[k]))
        # recovered: the largest weight is a profile attribute (positive) or its opposite (negative)
        opposites = {vocab.get(a).opposite for a in spec["profile"]}
        recovered = (top in spec["profile"] and weights[top] > 0) or (
            top in opposites and weights[top] < 0
        )
        # the profile attribute's place among the weights, sign-aware (its opposite counts negated)
        aligned = dict(weights)
        for a in spec["profile"]:
            opp = vocab.get(a).opposite
            if opp:
                aligned[opp] = -aligned[opp]
        ranking = sorted(aligned, key=lambda k: -aligned[k])
        profile_rank = 1 + min(
            ranking.index(x) for a in spec["profile"] for x in (a, vocab.get(a).opposite) if x
        )
        users[u] = {
            **spec,
            "comparisons": info["comparisons"],
            "drift_weights": {k: round(v, 3) for k, v in weights.items()},
            "drift_train_accuracy": round(info["train_accuracy"], 3),
            "drift_top_attribute": top,
            "drift_recovered": recovered,
            "drift_profile_rank": profile_rank,
            "drift_active": dict(drift.active(weights, drift.config)),
        }
    seconds["drift_fit"] = time.perf_counter() - t

    t = time.perf_counter()
    head = PersonalizedRewardHead(states[0].shape[1], vocab.names, rank=8, seed=cfg.seed)
    train_cfg = PadTrainConfig(top_k=cfg.top_k)
    trained = sorted({a for u in cfg.users for a in USERS[u]["profile"]})
    pad_metrics = {}
    for a in trained:
        feats = reward_targets(lm, states[1 + vocab.names.index(a)], states[0], top_k=cfg.top_k)
        pad_metrics[a] = train_channel(head, lm, vocab.names.index(a), feats, train_cfg)
    pad = PadGenerator({**common, "rm_weight": cfg.rm_weight, "top_k": cfg.top_k})
    pad.set_head(head, {"trained": trained})
    seconds["pad_train"] = time.perf_counter() - t

    # 4. evaluation decoding
    t = time.perf_counter()
    dec = DecodingConfig(
        max_new_tokens=cfg.max_new_tokens, repetition_penalty=cfg.repetition_penalty
    )
    texts: dict[str, dict[str, list[str]]] = {
        "plain": {"*": []},
        **{m: {u: [] for u in cfg.users} for m in METHODS[1:]},
    }
    for start in range(0, len(prompts), cfg.batch_prompts):
        chunk = prompts[start : start + cfg.batch_prompts]
        say(f"decoding prompts {start + 1}-{start + len(chunk)} of {len(prompts)}")
        texts["plain"]["*"] += collect_texts(
            lm, decode_tokens(lm, [[lm.chat_ids(p, vocab.neutral_prompt)] for p in chunk], dec)
        )
        rows = [(u, p) for u in cfg.users for p in chunk]
        outs = {
            "prompt": collect_texts(
                lm,
                decode_tokens(
                    lm,
                    [
                        [lm.chat_ids(p, vocab.preference_prompt(USERS[u]["profile"]))]
                        for u, p in rows
                    ],
                    dec,
                ),
            ),
            "drift": collect_texts(
                lm,
                drift.token_steps(
                    [p for _, p in rows], [users[u]["drift_weights"] for u, _ in rows]
                ),
            ),
            "pad": collect_texts(
                lm, pad.token_steps([p for _, p in rows], [USERS[u]["profile"] for u, _ in rows])
            ),
        }
        for m, out in outs.items():
            for (u, _), text in zip(rows, out):
                texts[m][u].append(text)
    seconds["decode"] = time.perf_counter() - t

    # 5. judges, fluency, checks
    t = time.perf_counter()

    def measure(outs: list[str]) -> dict[str, Any]:
        scores = judge_texts(outs, judge)
        lp, _, _ = score_answers(
            lm, [vocab.neutral_prompt], prompts, outs, max_tokens=cfg.max_new_tokens
        )
        return {"scores": scores, "logprob": lp[0]}

    plain = measure(texts["plain"]["*"])
    measured = {m: {u: measure(texts[m][u]) for u in cfg.users} for m in METHODS[1:]}
    seconds["judge"] = time.perf_counter() - t
    result = summarise_results(cfg, prompts, texts, plain, measured, users, pad_metrics, judge)

    t = time.perf_counter()
    u0 = cfg.users[0]
    result["latency"] = _latency(
        cfg, lm, vocab, drift, pad, prompts[0], users[u0]["drift_weights"], USERS[u0]["profile"]
    )
    result["latency"]["user"] = u0
    seconds["latency"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    seconds["process_cpu"] = time.process_time() - cpu0
    result["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    result["config"] = cfg.model_dump(mode="json")
    result["setup"] = {
        "pool_cached": cached,
        "eval_prompts": len(prompts),
        "train_prompts": len(train_prompts),
        "pool_answers": len(pool),
        "lm": lm.name,
        "attributes": vocab.names,
    }
    return result
