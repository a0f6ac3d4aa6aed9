"""PAD's published objective: the personalized reward model trained by DPO on preference pairs.

Chen et al., ICLR 2025, "PAD: Personalized Alignment of LLMs at Decoding-Time" (arXiv 2410.04070).
Each pair ``(x, y_w, y_l)`` carries a preference vector ``p`` (:mod:`.pairs`). With the token
reward ``R(p, s, a) = sum_j p_j phi_j(s, a)`` of :class:`~.head.PersonalizedRewardHead` (full
vocabulary, the reference being the frozen base) the loss is (:func:`.loss.pad_dpo_loss`)::

    loss = -log sigmoid( beta * ( sum_t R(p, s_t, y_w,t) - sum_t R(p, s_t, y_l,t) ) )

The state ``s_t`` is the prompt in the chat template with the system prompt PAD decodes with
(the preference prompt of ``p``, or the neutral one with ``preference_prompt=False``), plus the
response's first ``t`` tokens. The frozen LM runs once over every distinct (context, response) to
record its final hidden states; training then touches only the head's low-rank channels, on
``config.training.device``, computing the full-vocabulary log-softmax in chunks of tokens
(recomputed in the backward pass), so memory is bounded whatever the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from persona_engine.errors import InvalidInputError

#: token states per chunk of the full-vocabulary reward (bounds the (tokens, V) logits in memory)
TOKEN_CHUNK = 512


def pair_states(
    lm: Any, vocab: Any, pairs: Sequence[Any], *, preference_prompt: bool, max_tokens: int
) -> dict[str, Any]:
    """The frozen LM's hidden states over every pair's responses, on the CPU:

    ``hidden (N, H)`` and ``tokens (N,)`` per response token, ``start``/``length`` of each
    distinct response, and per pair the response indices ``chosen`` and ``rejected``."""
    import torch

    from persona_engine.lm import continuation_logprobs

    index: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    by_prefix: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    chosen: list[int] = []
    rejected: list[int] = []
    for pair in pairs:
        system = (
            vocab.preference_prompt(pair.preference) if preference_prompt else vocab.neutral_prompt
        )
        prefix = tuple(lm.chat_ids(pair.prompt, system))
        for text, out in ((pair.chosen, chosen), (pair.rejected, rejected)):
            ids = tuple(lm.text_ids(text)[:max_tokens])
            if not ids:
                raise InvalidInputError(f"an empty response in a preference pair: {text!r}")
            key = (prefix, ids)
            if key not in index:
                index[key] = len(index)
                by_prefix.setdefault(prefix, []).append(ids)
            out.append(index[key])
    hidden: list[Any] = [None] * len(index)
    for prefix, conts in by_prefix.items():
        for start in range(0, len(conts), 32):
            part = conts[start : start + 32]
            _, mask, h = continuation_logprobs(lm, [list(prefix)], part, with_hidden=True)
            for c, ids in enumerate(part):
                hidden[index[(prefix, ids)]] = h[0, c, : len(ids)]
    ids_of = [ids for (_, ids) in sorted(index, key=lambda k: index[k])]
    lengths = torch.tensor([len(i) for i in ids_of])
    return {
        "hidden": torch.cat(hidden),
        "tokens": torch.tensor([t for ids in ids_of for t in ids], dtype=torch.long),
        "start": torch.cumsum(lengths, 0) - lengths,
        "length": lengths,
        "chosen": torch.tensor(chosen, dtype=torch.long),
        "rejected": torch.tensor(rejected, dtype=torch.long),
    }


def sequence_rewards(
    head: Any, out_weight: Any, states: dict[str, Any], responses: Any, weights: Any
) -> Any:
    """``sum_t R(p, s_t, y_t)`` for each response in ``responses (M,)``, each with its own
    preference vector ``weights (M, K)``; only the channels some row weights are computed."""
    import torch
    from torch.utils.checkpoint import checkpoint

    channels = [int(j) for j in torch.nonzero(weights.abs().sum(0)).flatten()]
    total = torch.zeros(len(responses), device=weights.device)
    if not channels:
        return total
    lengths = states["length"][responses]
    rows = torch.cat(
        [torch.arange(int(s), int(s) + int(n)) for s, n in zip(states["start"][responses], lengths)]
    ).to(weights.device)
    owner = torch.repeat_interleave(
        torch.arange(len(responses), device=weights.device), lengths.to(weights.device)
    )
    w = weights[:, channels]

    def chunk_rewards(hidden: Any, tokens: Any, who: Any) -> Any:
        # each channel over only the tokens whose response weights it: a pair labelled with one
        # attribute costs one channel's (n, V) logits, not one per attribute in the batch
        wj = w[who]  # (n, K')
        reward = torch.zeros(len(who), device=hidden.device)
        for c, j in enumerate(channels):
            sel = torch.nonzero(wj[:, c]).flatten()
            if len(sel):
                phi = head.vocab_rewards(hidden[sel], out_weight, tokens[sel], [j])[:, 0]
                reward = reward.index_add(0, sel, phi * wj[sel, c])
        return reward

    for i in range(0, len(rows), TOKEN_CHUNK):
        r, who = rows[i : i + TOKEN_CHUNK], owner[i : i + TOKEN_CHUNK]
        args = (states["hidden"][r], states["tokens"][r], who)
        reward = (
            checkpoint(chunk_rewards, *args, use_reentrant=False)
            if torch.is_grad_enabled()
            else chunk_rewards(*args)
        )
        total = total.index_add(0, who, reward)
    return total


def train_dpo_head(
    lm: Any, vocab: Any, pairs: Sequence[Any], config: Any, *, progress: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Train a fresh head on ``pairs`` with PAD's DPO loss; returns it and its metrics."""
    import numpy as np
    import torch

    from persona_engine.training import fit_module, resolve_device, split_indices

    from .head import PersonalizedRewardHead
    from .loss import pad_dpo_loss

    if not pairs:
        raise InvalidInputError("PAD's dpo objective needs preference pairs")
    device = resolve_device(config.training.device)
    names = vocab.names
    P = torch.zeros((len(pairs), len(names)))
    for i, pair in enumerate(pairs):
        for name, w in vocab.check_weights(pair.preference).items():
            P[i, names.index(name)] = float(w)
    trained = [n for j, n in enumerate(names) if bool((P[:, j] != 0).any())]
    if not trained:
        raise InvalidInputError("every preference vector of the pairs is zero")
    states = pair_states(
        lm,
        vocab,
        pairs,
        preference_prompt=config.preference_prompt,
        max_tokens=config.max_response_tokens,
    )
    states = {k: v.to(device) for k, v in states.items() if k in ("hidden", "tokens")} | {
        k: v for k, v in states.items() if k not in ("hidden", "tokens")
    }
    P = P.to(device)
    strength = torch.tensor([float(p.weight) for p in pairs], device=device)
    out_weight = lm.model.get_output_embeddings().weight.detach().to(device, torch.float32)
    hidden_size = int(out_weight.shape[1])
    head = PersonalizedRewardHead(hidden_size, names, rank=config.rank, seed=config.training.seed)

    def margins(rows: np.ndarray) -> tuple[Any, Any]:
        idx = torch.as_tensor(rows, dtype=torch.long)
        w = P[idx.to(device)]
        both = sequence_rewards(
            head,
            out_weight,
            states,
            torch.cat([states["chosen"][idx], states["rejected"][idx]]),
            torch.cat([w, w]),
        )
        return both[: len(idx)], both[len(idx) :]

    def loss_fn(rows: np.ndarray, epoch: int = 0) -> Any:
        chosen, rejected = margins(rows)
        idx = torch.as_tensor(rows, dtype=torch.long, device=device)
        return pad_dpo_loss(chosen, rejected, config.beta, strength[idx])

    def evaluate(rows: np.ndarray) -> dict[str, float]:
        if not len(rows):
            return {}
        with torch.no_grad():
            loss, correct = 0.0, 0
            for i in range(0, len(rows), config.training.batch_size):
                part = rows[i : i + config.training.batch_size]
                chosen, rejected = margins(part)
                loss += float(loss_fn(part)) * len(part)
                correct += int((chosen > rejected).sum())
        return {"loss": round(loss / len(rows), 4), "accuracy": round(correct / len(rows), 4)}

    head.to(device)
    train_rows, val_rows = split_indices(
        len(pairs), config.training.val_fraction, config.training.seed
    )
    before = evaluate(np.arange(len(pairs)))
    params = [p for j in (names.index(n) for n in trained) for p in (head.down[j], head.up[j])]
    result = fit_module(
        head, loss_fn, len(pairs), config.training, params=params, desc="PAD DPO", progress=progress
    )
    head.to(device)
    metrics: dict[str, Any] = {
        "pairs": len(pairs),
        "responses": len(states["length"]),
        "tokens": int(states["length"].sum()),
        "epochs": result.epochs,
        "loss_before": before.get("loss", math.log(2)),
        **{f"train_{k}": v for k, v in evaluate(train_rows).items()},
        **{f"val_{k}": v for k, v in evaluate(val_rows).items()},
    }
    head.cpu()
    return head, {"objective": "dpo", "trained": trained, "metrics": metrics}
