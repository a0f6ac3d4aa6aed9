"""``persona bench encoders``: what each encoder costs on this machine.

For each encoder, on the first ``n`` comparisons of a dataset (JSON Lines, interchange format):

- **cold encoding** through ``Engine.preference_data`` into an empty store (the path ``persona
  train``, ``persona encode`` and ``persona bench reward`` use): seconds, feature rows per second
  (a row is one (prompt, response) pair, or one response for a prompt-free encoder, or one prompt),
  and comparisons per second; the warm pass over the same comparisons, which must encode nothing;
- for an encoder that reads the prompt through a key/value cache (``hf``), **prefix reuse**: on
  ``prompts`` distinct prompts with two of their responses, the time of one pass over each prompt
  alone (``encode_prompts``), of both responses with the prompt's cache reused (``encode_pairs``)
  and of both as full passes without reuse; the ratio reused / prompt alone is the figure the
  reward-backbone issue bounds at 1.3 for long prompts.

Times are wall-clock seconds with torch on ``threads`` threads; the 1-minute load average is
recorded beside them, since other work on the machine slows every figure.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on every platform
        return None


def prefix_reuse(
    encoder: Any, comps: list[Any], prompts: int, min_prompt_tokens: int = 0
) -> dict[str, Any]:
    """Seconds for ``prompts`` prompts (of at least ``min_prompt_tokens`` rendered tokens): the
    prompt alone, two responses with reuse, two without."""
    by_prompt: dict[str, list[str]] = {}
    for c in comps:
        by_prompt.setdefault(c.prompt, [])
        for r in (c.chosen, c.rejected):
            if r not in by_prompt[c.prompt]:
                by_prompt[c.prompt].append(r)
    chosen = [
        (p, rs[:2])
        for p, rs in by_prompt.items()
        if len(rs) >= 2 and len(encoder.prefix_ids(p)) >= min_prompt_tokens
    ][:prompts]
    if not chosen:
        raise InvalidInputError(
            f"no prompt of at least {min_prompt_tokens} tokens with two responses in the data"
        )
    encoder.encode_pairs([chosen[0][0]], [chosen[0][1][0]])  # load the model, warm up
    t0 = time.perf_counter()
    for p, _ in chosen:
        encoder.encode_prompts([p])
    alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p, rs in chosen:
        encoder.encode_pairs([p, p], rs)
    reused = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p, rs in chosen:
        for r in rs:
            encoder.full_pass_features(p, r)
    full = time.perf_counter() - t0
    tokens = [len(encoder.prefix_ids(p)) for p, _ in chosen]
    resp = [len(encoder.continuation_ids(r)[0]) for _, rs in chosen for r in rs]
    return {
        "prompts": len(chosen),
        "mean_prompt_tokens": round(sum(tokens) / len(tokens), 1),
        "mean_response_tokens": round(sum(resp) / len(resp), 1),
        "prompt_alone_s": round(alone, 3),
        "two_responses_reused_s": round(reused, 3),
        "two_responses_full_passes_s": round(full, 3),
        "reused_over_prompt_alone": round(reused / alone, 3),
        "full_over_reused": round(full / reused, 3),
    }


def run_encoder_benchmark(
    data: Path,
    encoders: list[tuple[str, dict[str, Any]]],
    *,
    n: int = 200,
    prompts: int = 20,
    min_prompt_tokens: int = 0,
    threads: int | None = None,
    progress: bool = False,
    log: Any = None,
) -> dict[str, Any]:
    import torch

    from ..engine import Engine
    from ..store import Store
    from .reward import load_comparisons

    say = log or (lambda msg: None)
    if threads:
        torch.set_num_threads(threads)
    every, _ = load_comparisons(Path(data), skip_bad=True)
    comps = every[:n]
    out: dict[str, Any] = {
        "data": str(data),
        "comparisons": len(comps),
        "torch_threads": torch.get_num_threads(),
        "encoders": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in encoders:
            store = Store(Path(tmp) / f"{name}.db")
            engine = Engine(home=tmp, store=store)
            enc = engine.encoder(name, config)
            engine.preference_data(comps[:2], encoder=enc)  # load the model outside the timing
            load = _load_avg()
            started = time.perf_counter()
            engine.preference_data(comps, encoder=enc, progress=progress)
            cold = time.perf_counter() - started
            rows = store.count_features(enc.id)
            started = time.perf_counter()
            engine.preference_data(comps, encoder=enc)
            warm = time.perf_counter() - started
            result: dict[str, Any] = {
                "id": enc.id,
                "reads_prompt": enc.reads_prompt,
                "dim": enc.dim,
                "cold_s": round(cold, 2),
                "feature_rows": rows,
                "rows_per_s": round(rows / cold, 1),
                "comparisons_per_s": round(len(comps) / cold, 2),
                "warm_s": round(warm, 3),
                "new_rows_on_warm_pass": store.count_features(enc.id) - rows,
                "load_avg_1min": load,
            }
            if hasattr(enc, "full_pass_features"):
                result["prefix_reuse"] = prefix_reuse(enc, every, prompts)
                if min_prompt_tokens:
                    result["prefix_reuse_long_prompts"] = {
                        "min_prompt_tokens": min_prompt_tokens,
                        **prefix_reuse(enc, every, prompts, min_prompt_tokens),
                    }
            say(f"{name}: {result}")
            out["encoders"][name] = result
            store.close()
    return out
