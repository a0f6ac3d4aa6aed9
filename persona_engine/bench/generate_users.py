"""The simulated users of ``persona bench generate`` and what is learnt from them per seed.

Each user prefers one or two P-SOUPS options (``USERS``: both sides of each dimension and two mixed
profiles). An option has a *training* judge, which makes the user's labels
(:mod:`.generate_judges`), and a different *evaluation* judge, which the figures are measured
with (:mod:`.eval_judges`). From a pool of the LM's own answers to training prompts the user gets
labelled comparisons (:func:`user_comparisons`), stored in an engine; Drift fits their weights
from them (:func:`fit_drift`) and PAD's head is trained by DPO on every user's stored pairs
(:func:`train_pad`).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import make_config

if TYPE_CHECKING:
    from .generate import GenerateBenchConfig

#: each P-SOUPS option a user can prefer: (training judge, evaluation judge, preferred direction)
OPTIONS: dict[str, tuple[str, str, int]] = {
    "elementary": ("reading_grade", "readability_grade", -1),
    "phd": ("reading_grade", "readability_grade", 1),
    "concise": ("words", "content_words", -1),
    "informative": ("words", "content_words", 1),
    "friendly": ("friendliness", "sentiment", 1),
    "unfriendly": ("friendliness", "sentiment", -1),
}
_PROFILES = {
    "elementary": ("elementary",),
    "phd": ("phd",),
    "concise": ("concise",),
    "informative": ("informative",),
    "friendly": ("friendly",),
    "unfriendly": ("unfriendly",),
    "elementary_friendly": ("elementary", "friendly"),
    "phd_unfriendly": ("phd", "unfriendly"),
}
_OPPOSITES = [
    ("elementary", "phd"),
    ("concise", "informative"),
    ("friendly", "unfriendly"),
    ("elementary_friendly", "phd_unfriendly"),
]
USERS: dict[str, dict[str, Any]] = {
    name: {
        "profile": {o: 1.0 for o in options},
        "train_targets": [[OPTIONS[o][0], OPTIONS[o][2]] for o in options],
        "eval_targets": [[OPTIONS[o][1], OPTIONS[o][2]] for o in options],
        "opposite": next(b if a == name else a for a, b in _OPPOSITES if name in (a, b)),
    }
    for name, options in _PROFILES.items()
}


def user_comparisons(
    user: str,
    pool: list[tuple[str, str]],
    scores: dict[str, np.ndarray],
    cfg: GenerateBenchConfig,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Pairs of pool answers to the same prompt, labelled by the user's training judges (the sum
    of their standardised, signed scores) with Bradley-Terry noise."""
    z = np.zeros(len(pool))
    for judge, direction in USERS[user]["train_targets"]:
        x = scores[judge]
        z += np.nan_to_num(direction * (x - np.nanmean(x)) / (np.nanstd(x) + 1e-9))
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
    comps = []
    for k in rng.permutation(len(pairs))[: cfg.comparisons]:
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


def pool_and_scores(
    cfg: GenerateBenchConfig,
    seed: int,
    lm: Any,
    vocab: Any,
    train_prompts: list[str],
    attrs: list[str],
    say: Any,
) -> tuple[list[tuple[str, str]], np.ndarray, list[Any] | None, bool]:
    """The answer pool and its one scoring pass under every system prompt (Drift's attribute
    rewards; the token states too for the distill objective). Kept in
    ``<user dir>/cache/bench_generate`` (keyed by everything they depend on) unless
    ``cfg.reuse_pool`` is off."""
    import hashlib

    import torch
    from persona_engine_drift.rewards import score_answers
    from persona_engine_pad.trainer import contrast_responses

    from ..paths import cache_dir

    hidden = cfg.objective == "distill"
    key = json.dumps(
        [lm.id, vocab.digest, train_prompts, attrs, cfg.samples, cfg.pool_tokens, seed, hidden]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = cache_dir() / "bench_generate" / f"pool-{digest}.npz"
    if cfg.reuse_pool and path.is_file():
        saved = np.load(path)
        pool = [tuple(x) for x in json.loads(str(saved["pool"]))]
        states = [torch.from_numpy(h) for h in saved["states"]] if hidden else None
        return pool, saved["mean_lp"], states, True  # type: ignore[return-value]
    say(f"seed {seed}: sampling the answer pool ({len(train_prompts)} prompts x {len(attrs) + 1})")
    responses = contrast_responses(
        lm,
        vocab,
        attrs,
        train_prompts,
        samples=cfg.samples,
        max_new_tokens=cfg.pool_tokens,
        temperature=0.8,
        seed=seed,
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
    say(f"seed {seed}: scoring {len(pool)} pool answers under {len(vocab.attributes) + 1} prompts")
    systems = [vocab.neutral_prompt, *(a.system_prompt for a in vocab.attributes)]
    mean_lp, states, _ = score_answers(
        lm,
        systems,
        [p for p, _ in pool],
        [a for _, a in pool],
        max_tokens=cfg.pool_tokens,
        with_hidden=hidden,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"pool": json.dumps(pool), "mean_lp": mean_lp}
    if states is not None:
        arrays["states"] = torch.stack(states).numpy()
    np.savez(path, **arrays)
    return pool, mean_lp, states, False


def train_pad(
    cfg: GenerateBenchConfig,
    seed: int,
    lm: Any,
    vocab: Any,
    engine: Any,
    states: list[Any] | None,
) -> tuple[Any, dict[str, Any]]:
    """PAD's head: DPO on the users' stored comparisons through ``persona pad-train
    --from-store``'s path, each user's pairs labelled with their profile (``--user-preference``);
    or the distill shortcut on the pool's token states."""
    from persona_engine_pad.pairs import collect_pairs
    from persona_engine_pad.trainer import PadTrainConfig, train_reward_head

    if cfg.objective == "dpo":
        train_cfg = make_config(
            PadTrainConfig,
            {
                "objective": "dpo",
                "beta": cfg.dpo_beta,
                "rank": cfg.rank,
                "max_response_tokens": cfg.pool_tokens,
                "training": {"seed": seed, "epochs": cfg.dpo_epochs},
            },
        )
        pairs, sources = collect_pairs(
            vocab,
            store=engine.store,
            users=cfg.users,
            given={u: USERS[u]["profile"] for u in cfg.users},
        )
        head, meta = train_reward_head(lm, vocab, train_cfg, pairs=pairs)
        return head, {**meta, "sources": sources}
    from persona_engine_pad.head import PersonalizedRewardHead
    from persona_engine_pad.trainer import reward_targets, train_channel

    assert states is not None
    train_cfg = PadTrainConfig(objective="distill", top_k=cfg.top_k, rank=cfg.rank)
    head = PersonalizedRewardHead(states[0].shape[1], vocab.names, rank=cfg.rank, seed=seed)
    trained = sorted({a for u in cfg.users for a in USERS[u]["profile"]})
    metrics = {}
    for a in trained:
        feats = reward_targets(lm, states[1 + vocab.names.index(a)], states[0], top_k=cfg.top_k)
        metrics[a] = train_channel(head, lm, vocab.names.index(a), feats, train_cfg)
    return head, {"objective": "distill", "trained": trained, "metrics": metrics}


def fit_drift(drift: Any, engine: Any, user: str, vocab: Any) -> dict[str, Any]:
    weights, info = drift.fit_weights(engine, user)
    aligned = dict(weights)  # the profile attributes' place among the weights, sign-aware
    profile = USERS[user]["profile"]
    for a in profile:
        opp = vocab.get(a).opposite
        if opp and opp not in profile:
            aligned[opp] = -aligned[opp]
    ranking = sorted(aligned, key=lambda k: -aligned[k])
    return {
        "weights": {k: round(v, 4) for k, v in weights.items()},
        "train_accuracy": round(info["train_accuracy"], 3),
        "comparisons": info["comparisons"],
        "profile_rank": [1 + ranking.index(a) for a in profile],
        "active": dict(drift.active(weights, drift.config)),
    }
