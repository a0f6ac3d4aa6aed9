"""Training PAD's personalized reward head (the official PAD code ships no training code).

What is trained: only the low-rank channels ``A_j, B_j`` of :class:`PersonalizedRewardHead`
(``2 * rank * H`` numbers per attribute); the LM's backbone and output head stay frozen.

Two objectives (``PadTrainConfig.objective``):

- ``dpo`` (the default, PAD as published): preference pairs ``(prompt, chosen, rejected)``, each
  labelled with a preference vector ``p``, train ``R(p, s, a) = sum_j p_j phi_j(s, a)`` with
  PAD's DPO loss against the frozen base (:mod:`.dpo`; the pairs come from :mod:`.pairs`: a JSONL
  file or the users' stored comparisons).
- ``distill`` (this library's shortcut, no preference data; below): each channel is regressed
  onto the LM's own log-ratio between the attribute's system prompt and the neutral one.

``distill`` trains on the base LM's own answers. For every training prompt (by default
``profiles/attributes/prompts/general.yaml``, none of them from the evaluation set) the LM samples
answers under the neutral system prompt and under each attribute's steering prompt (common random
numbers across prompts, :func:`contrast_responses`). Every token state of those answers is run
twice, in the context ``(s_j, prompt)`` and ``(s_base, prompt)``; channel ``j`` is fitted to the
attribute's token-level log-ratio over the top-k candidates of the state (the DPO-optimal implicit
reward of the attribute-prompted LM, see :mod:`.loss`), from the head input of either context
(PAD prompts the base with the preference; ``preference_prompt=False`` does not). Training uses
the shared loop (:func:`persona_engine.training.fit_module`), one channel at a time: channel ``j``
never sees another attribute's targets, so a user's reward moves only what their profile weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from persona_engine.config import PluginConfig, TrainingConfig
from persona_engine.errors import InvalidInputError, NoModelError
from persona_engine.paths import user_dir

NEUTRAL = "neutral"


#: the shared loop's defaults per objective (a dpo batch is pairs, a distill batch token states)
TRAINING_DEFAULTS = {
    "dpo": {"epochs": 20, "batch_size": 16, "lr": 5e-3, "val_fraction": 0.1, "patience": 4},
    "distill": {"epochs": 30, "batch_size": 256, "lr": 1e-2, "val_fraction": 0.2, "patience": 5},
}


class PadTrainConfig(PluginConfig):
    objective: Literal["dpo", "distill"] = Field(
        "dpo",
        description=(
            "dpo: PAD's published objective, DPO on preference pairs labelled with preference "
            "vectors; distill: regress each channel onto the LM's attribute-prompt log-ratio "
            "(no preference data)."
        ),
    )
    rank: int = Field(8, ge=1, description="Rank of each attribute channel.")
    beta: float = Field(0.1, gt=0, description="dpo: DPO's beta (scale of the reward margin).")
    preference_prompt: bool = Field(
        True,
        description="dpo: states are read under the pair's preference prompt, as PAD decodes by default.",
    )
    max_response_tokens: int = Field(
        64, ge=1, description="dpo: tokens of each response the reward is summed over."
    )
    train_attributes: list[str] = Field(
        default_factory=list,
        description="distill: attributes to train (empty: the whole vocabulary).",
    )
    prompts: str = Field(
        "general",
        description="distill: training prompts, a profiles/attributes/prompts name or a YAML/text file.",
    )
    max_prompts: int = Field(
        0, ge=0, description="distill: use at most this many training prompts (0: all)."
    )
    samples: int = Field(
        4, ge=1, description="distill: answers sampled per prompt and system prompt."
    )
    max_new_tokens: int = Field(
        32, ge=4, description="distill: length of the sampled answers (tokens)."
    )
    temperature: float = Field(
        0.8, gt=0, description="distill: sampling temperature of the answers."
    )
    top_k: int = Field(
        10,
        ge=2,
        description="distill: candidates the token reward is normalised over (PAD's top-k).",
    )
    batch_rows: int = Field(24, ge=1, description="distill: sequences per generation batch.")
    training: TrainingConfig = Field(
        default_factory=lambda: TrainingConfig(**TRAINING_DEFAULTS["dpo"]),
        description="Options of the shared training loop (defaults depend on the objective).",
    )

    @model_validator(mode="before")
    @classmethod
    def _objective_defaults(cls, data: Any) -> Any:
        """Unset training options take the objective's defaults (:data:`TRAINING_DEFAULTS`)."""
        if isinstance(data, dict):
            objective = data.get("objective", "dpo")
            given = data.get("training") or {}
            if isinstance(given, TrainingConfig):
                given = given.model_dump(exclude_unset=True)
            if objective in TRAINING_DEFAULTS and isinstance(given, dict):
                data = {**data, "training": {**TRAINING_DEFAULTS[objective], **given}}
        return data


def contrast_responses(
    lm: Any,
    vocab: Any,
    names: Sequence[str],
    prompts: Sequence[str],
    *,
    samples: int,
    max_new_tokens: int,
    temperature: float,
    seed: int = 0,
    batch_rows: int = 24,
) -> dict[str, dict[str, list[str]]]:
    """``responses[context][prompt][i]``: answer ``i`` under the neutral prompt and each attribute's.

    Every context is sampled with the same seeds and the same batch layout (common random
    numbers), so answer ``i`` under ``s_j`` and answer ``i`` under the neutral prompt share their
    random draws: where the two prompts give similar next-token distributions they pick the same
    tokens, and the pair differs mainly where the attribute prompt changes the model's choices.
    Without this, small samples differ in unrelated ways too, and DPO learns those differences.
    """
    from persona_engine.lm import DecodingConfig, collect_texts, decode_tokens

    systems = {NEUTRAL: vocab.neutral_prompt, **{n: vocab.get(n).system_prompt for n in names}}
    jobs = [(p, i) for p in prompts for i in range(samples)]
    out: dict[str, dict[str, list[str]]] = {c: {p: [] for p in prompts} for c in systems}
    for context, system in systems.items():
        for start in range(0, len(jobs), batch_rows):
            part = jobs[start : start + batch_rows]
            cfg = DecodingConfig(
                max_new_tokens=max_new_tokens,
                do_sample=True,
                temperature=temperature,
                seed=seed + start,
            )
            texts = collect_texts(
                lm, decode_tokens(lm, [[lm.chat_ids(p, system)] for p, _ in part], cfg)
            )
            for (p, _), t in zip(part, texts):
                out[context][p].append(t)
    return out


def answer_pool(
    responses: dict[str, dict[str, list[str]]], contexts: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(prompts, answers) of the answers sampled under ``contexts``."""
    prompts, answers = [], []
    for c in contexts:
        for prompt, texts in responses.get(c, {}).items():
            for t in texts:
                if t.strip():
                    prompts.append(prompt)
                    answers.append(t)
    return prompts, answers


def reward_targets(
    lm: Any, h_attr: Any, h_neutral: Any, *, top_k: int, device: Any = None
) -> dict[str, Any]:
    """Training rows of one channel from the same token states in the attribute context
    (``h_attr``) and the neutral one (``h_neutral``): for the head input of each context, the
    top-k candidates of that context, the target ``delta_j`` over them and the candidate weights.
    The full-vocabulary logits are computed on ``device`` (default: the LM's); the rows are
    returned on the CPU."""
    import torch

    weight = lm.model.get_output_embeddings().weight.detach()
    weight = weight.to(device if device is not None else weight.device, torch.float32)
    rows: dict[str, list[Any]] = {"hidden": [], "candidates": [], "delta": [], "weight": []}
    for start in range(0, len(h_attr), 512):
        ha = h_attr[start : start + 512].to(weight.device, torch.float32)
        h0 = h_neutral[start : start + 512].to(weight.device, torch.float32)
        z_attr, z_neutral = ha @ weight.T, h0 @ weight.T
        for h, z in ((ha, z_attr), (h0, z_neutral)):
            cand = z.topk(top_k, dim=-1).indices
            lj = torch.log_softmax(z_attr.gather(-1, cand), -1)
            l0 = torch.log_softmax(z_neutral.gather(-1, cand), -1)
            rows["hidden"].append(h.cpu())
            rows["candidates"].append(cand.cpu())
            rows["delta"].append((lj - l0).cpu())
            rows["weight"].append(lj.exp().cpu())
    return {k: torch.cat(v) for k, v in rows.items()}


def channel_rewards(head: Any, weight: Any, feats: dict[str, Any], rows: Any, channel: int) -> Any:
    """``phi_j (n, k)`` of channel ``channel`` over each row's candidates."""
    import torch

    h = feats["hidden"][rows]
    cand_rows = weight[feats["candidates"][rows]]  # (n, k, H)
    base = torch.einsum("nkh,nh->nk", cand_rows, h)
    return head.token_rewards(h, cand_rows, base, [channel])[:, 0]


def train_channel(
    head: Any,
    lm: Any,
    channel: int,
    feats: dict[str, Any],
    config: PadTrainConfig,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit channel ``channel`` of ``head`` to its targets ``feats`` (see :mod:`.loss`)."""
    import numpy as np
    import torch

    from persona_engine.training import fit_module, resolve_device, split_indices

    from .loss import explained_share, reward_fit_loss

    device = resolve_device(config.training.device)
    weight = lm.model.get_output_embeddings().weight.detach().to(device, torch.float32)
    feats = {k: v.to(device) for k, v in feats.items()}

    def loss_fn(rows: np.ndarray, epoch: int) -> Any:
        idx = torch.as_tensor(rows, dtype=torch.long, device=device)
        return reward_fit_loss(
            channel_rewards(head, weight, feats, idx, channel),
            feats["delta"][idx],
            feats["weight"][idx],
        )

    n = len(feats["hidden"])
    params = [head.down[channel], head.up[channel]]
    training = config.training
    if config.objective != "distill":  # a config built for dpo (the default): distill's loop
        training = TrainingConfig(
            **{**TRAINING_DEFAULTS["distill"], "seed": training.seed, "device": training.device}
        )
    result = fit_module(
        head,
        loss_fn,
        n,
        training,
        params=params,
        desc=f"PAD head {head.attributes[channel]}",
        progress=progress,
    )
    train_rows, val_rows = split_indices(n, training.val_fraction, training.seed)
    metrics: dict[str, Any] = {"states": n, "epochs": result.epochs}
    origin = next(head.parameters()).device
    head.to(device)
    with torch.no_grad():
        for name, rows in (("train", train_rows), ("val", val_rows)):
            if len(rows):
                idx = torch.as_tensor(rows, dtype=torch.long, device=device)
                phi = channel_rewards(head, weight, feats, idx, channel)
                metrics[f"{name}_explained"] = round(
                    explained_share(phi, feats["delta"][idx], feats["weight"][idx]), 4
                )
    head.to(origin)
    return metrics


def train_reward_head(
    lm: Any,
    vocab: Any,
    config: PadTrainConfig,
    *,
    pairs: Sequence[Any] | None = None,
    prompts: Sequence[str] | None = None,
    responses: dict[str, dict[str, list[str]]] | None = None,
    progress: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Train a head with ``config.objective``: ``dpo`` on ``pairs`` (:mod:`.dpo`), or ``distill``
    (below). Returns the head and its metrics."""
    if config.objective == "dpo":
        from .dpo import train_dpo_head

        if not pairs:
            raise InvalidInputError(
                "PAD's dpo objective trains on preference pairs: give a JSONL of pairs or "
                "train from the stored comparisons (or use the distill objective)"
            )
        return train_dpo_head(lm, vocab, pairs, config, progress=progress)
    return distill_reward_head(
        lm, vocab, config, prompts=prompts, responses=responses, progress=progress
    )


def distill_reward_head(
    lm: Any,
    vocab: Any,
    config: PadTrainConfig,
    *,
    prompts: Sequence[str] | None = None,
    responses: dict[str, dict[str, list[str]]] | None = None,
    progress: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """``distill``: sample the self-contrast answers (unless ``responses`` are given), then fit
    every requested channel to its own attribute's log-ratio. Returns the head and per-attribute
    metrics."""
    from persona_engine.progress import progress_bar
    from persona_engine.training import resolve_device

    from .head import PersonalizedRewardHead

    names = list(config.train_attributes) or vocab.names
    for n in names:
        vocab.get(n)
    if responses is None:
        from persona_engine_drift.attributes import load_prompts

        prompts = list(prompts) if prompts is not None else load_prompts(config.prompts)
        if config.max_prompts:
            prompts = prompts[: config.max_prompts]
        sampled = [
            *names,
            *sorted({vocab.get(n).opposite for n in names if vocab.get(n).opposite} - set(names)),
        ]
        responses = contrast_responses(
            lm,
            vocab,
            sampled,
            prompts,
            samples=config.samples,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            seed=config.training.seed,
            batch_rows=config.batch_rows,
        )
    from persona_engine_drift.rewards import score_answers

    hidden_size = int(lm.model.get_output_embeddings().weight.shape[1])
    head = PersonalizedRewardHead(
        hidden_size, vocab.names, rank=config.rank, seed=config.training.seed
    )
    metrics: dict[str, Any] = {}
    bar = progress_bar(
        total=len(names), desc="PAD reward head", unit="attribute", disable=not progress
    )
    for name in names:
        opposite = vocab.get(name).opposite
        prompts_j, answers_j = answer_pool(
            responses, [NEUTRAL, name, *([opposite] if opposite else [])]
        )
        if not answers_j:
            raise InvalidInputError(f"no answers to train attribute {name!r} on")
        _, states, _ = score_answers(
            lm,
            [vocab.get(name).system_prompt, vocab.neutral_prompt],
            prompts_j,
            answers_j,
            max_tokens=config.max_new_tokens,
            with_hidden=True,
        )
        assert states is not None
        feats = reward_targets(
            lm,
            states[0],
            states[1],
            top_k=config.top_k,
            device=resolve_device(config.training.device),
        )
        metrics[name] = {
            "answers": len(answers_j),
            **train_channel(head, lm, head.attributes.index(name), feats, config),
        }
        bar.update(1)
    bar.close()
    return head, {"objective": "distill", "trained": names, "metrics": metrics}


# -- storage --------------------------------------------------------------------------------
def default_head_dir(lm: Any, vocab: Any) -> Path:
    return user_dir() / "models" / "pad" / f"{lm.name}-{vocab.digest}"


def save_head(head: Any, path: Path, *, lm: Any, vocab: Any, meta: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous() for k, v in head.state_dict().items()},
        str(path / "head.safetensors"),
    )
    info = {
        **head.config_dict(),
        "lm": lm.id,
        "lm_weights": lm.weights_id,  # the same LM in another dtype reads the head as well
        "vocabulary": vocab.name,
        "vocabulary_digest": vocab.digest,
        **meta,
    }
    (path / "head.json").write_text(json.dumps(info, indent=2))
    return path


def load_head(path: Path, *, lm: Any, vocab: Any) -> tuple[Any, dict[str, Any]]:
    from safetensors.torch import load_file

    from .head import PersonalizedRewardHead

    if not (path / "head.json").is_file():
        raise NoModelError(
            f"no trained PAD reward head at {path}; train one with `persona pad-train` (or pass heads=<folder>)"
        )
    info = json.loads((path / "head.json").read_text())
    same_lm = info.get("lm") == lm.id or info.get("lm_weights", "") == lm.weights_id
    if not same_lm or info.get("vocabulary_digest") != vocab.digest:
        raise NoModelError(
            f"the PAD reward head at {path} was trained for {info.get('lm')} / vocabulary {info.get('vocabulary')}; retrain it"
        )
    head = PersonalizedRewardHead(info["hidden_size"], info["attributes"], rank=info["rank"])
    head.load_state_dict(load_file(str(path / "head.safetensors")))
    head.eval()
    head.requires_grad_(False)
    return head, info
