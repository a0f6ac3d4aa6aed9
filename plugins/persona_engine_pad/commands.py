"""``persona pad-train``: train the PAD reward head for an LM and an attribute vocabulary."""

from __future__ import annotations

import json
from typing import Any

import click


def parse_user_preferences(items: tuple[str, ...]) -> dict[str, Any]:
    """``USER=SPEC`` items: SPEC is an attribute name, ``a,b`` or a JSON mapping."""
    from persona_engine.errors import InvalidInputError

    out: dict[str, Any] = {}
    for item in items:
        user, sep, spec = item.partition("=")
        if not sep or not user.strip() or not spec.strip():
            raise InvalidInputError(f"--user-preference takes USER=PREFERENCE, not {item!r}")
        spec = spec.strip()
        if spec.startswith("{"):
            try:
                out[user.strip()] = json.loads(spec)
            except json.JSONDecodeError as e:
                raise InvalidInputError(f"--user-preference {item!r}: {e.msg}") from None
        else:
            out[user.strip()] = spec
    return out


def add_commands(cli: Any) -> None:
    @cli.command("pad-train")
    @click.option(
        "--lm",
        default="smollm2",
        show_default=True,
        help="Base LM: 'smollm2', a local HF folder or a .gguf file.",
    )
    @click.option(
        "--attributes",
        "-a",
        multiple=True,
        default=("psoups",),
        show_default=True,
        help="Attribute vocabularies (repeatable): the dimensions of the preference vectors.",
    )
    @click.option(
        "--objective",
        type=click.Choice(["dpo", "distill"]),
        default="dpo",
        show_default=True,
        help="dpo: PAD's published DPO loss on preference pairs (needs --pairs or --from-store); "
        "distill: regress each channel onto the LM's own attribute-prompt log-ratio (no "
        "preference data).",
    )
    @click.option(
        "--pairs",
        "pairs_file",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="dpo: a JSONL of pairs {prompt, chosen, rejected, preference[, strength]}; "
        "preference is an attribute name, a list of names or {attribute: weight}.",
    )
    @click.option(
        "--from-store",
        is_flag=True,
        help="dpo: train on the users' stored text comparisons, each labelled with its user's "
        "preference vector (--user-preference, else fitted from their comparisons by Drift's "
        "closed form, the vector PAD decodes that user with).",
    )
    @click.option(
        "--user",
        "users",
        multiple=True,
        help="--from-store: only these users (repeatable; default: all with text comparisons).",
    )
    @click.option(
        "--user-preference",
        "user_preferences",
        multiple=True,
        metavar="USER=PREFERENCE",
        help="--from-store: the vector of USER's pairs, e.g. alice=concise (one-hot), "
        'alice=concise,friendly or alice=\'{"concise": 1, "humor": -0.5}\' (repeatable).',
    )
    @click.option("--beta", type=float, default=0.1, show_default=True, help="dpo: DPO's beta.")
    @click.option(
        "--epochs", type=int, default=None, help="Most training epochs (default: per objective)."
    )
    @click.option(
        "--train",
        "-t",
        "train_attributes",
        multiple=True,
        help="distill: train only these attributes (repeatable; default: all).",
    )
    @click.option(
        "--prompts",
        default="general",
        show_default=True,
        help="distill: training prompts, a shipped list name or a YAML/text file.",
    )
    @click.option(
        "--max-prompts",
        type=int,
        default=0,
        help="distill: use at most this many prompts (0: all).",
    )
    @click.option(
        "--samples",
        type=int,
        default=2,
        show_default=True,
        help="distill: answers sampled per prompt and system prompt.",
    )
    @click.option(
        "--max-new-tokens",
        type=int,
        default=32,
        show_default=True,
        help="distill: length of the sampled answers.",
    )
    @click.option(
        "--device",
        default="cpu",
        show_default=True,
        help="torch device of the LM and the training: cpu, cuda, cuda:N or auto.",
    )
    @click.option(
        "--dtype",
        type=click.Choice(["float32", "bfloat16", "auto"]),
        default="float32",
        show_default=True,
        help="Weights dtype of the LM (auto: bfloat16 on a CUDA GPU that supports it). The head "
        "trains in float32 and works with the LM in either dtype.",
    )
    @click.option(
        "--out",
        default=None,
        help="Folder to save the head to (default: the PAD generator's default).",
    )
    def pad_train(
        lm: str,
        attributes: tuple[str, ...],
        objective: str,
        pairs_file: str | None,
        from_store: bool,
        users: tuple[str, ...],
        user_preferences: tuple[str, ...],
        beta: float,
        epochs: int | None,
        train_attributes: tuple[str, ...],
        prompts: str,
        max_prompts: int,
        samples: int,
        max_new_tokens: int,
        device: str,
        dtype: str,
        out: str | None,
    ) -> None:
        """Train PAD's personalized reward head R(p, s, a) = sum_j p_j phi_j(s, a).

        With the default dpo objective (PAD as published), the head learns from preference
        pairs, each labelled with a preference vector p, by minimising
        -log sigmoid(beta * (sum_t R(p, s_t, chosen_t) - sum_t R(p, s_t, rejected_t))) with the
        frozen LM as reference. With distill, no preferences are used: each channel is fitted to
        the LM's own log-ratio between its attribute's system prompt and the neutral one.
        """
        from pathlib import Path

        from persona_engine_drift.attributes import load_vocabulary

        from persona_engine.config import make_config
        from persona_engine.errors import InvalidInputError
        from persona_engine.lm import load_lm, resolve_lm_device

        from .pairs import collect_pairs
        from .trainer import PadTrainConfig, default_head_dir, save_head, train_reward_head

        if objective == "dpo" and not (pairs_file or from_store):
            raise InvalidInputError(
                "the dpo objective trains on preference pairs: give --pairs FILE.jsonl and/or "
                "--from-store (or --objective distill)"
            )
        if objective == "distill" and (pairs_file or from_store):
            raise InvalidInputError("--pairs and --from-store are for the dpo objective")
        training: dict[str, Any] = {"device": resolve_lm_device(device)}
        if epochs is not None:
            training["epochs"] = epochs
        cfg = make_config(
            PadTrainConfig,
            {
                "objective": objective,
                "beta": beta,
                "train_attributes": list(train_attributes),
                "prompts": prompts,
                "max_prompts": max_prompts,
                "samples": samples,
                "max_new_tokens": max_new_tokens,
                "training": training,
            },
        )
        model = load_lm(lm, device=device, dtype=dtype)
        vocab = load_vocabulary(list(attributes))
        engine: Any = None
        fit: Any = None
        if from_store:
            from persona_engine.cli.common import get_engine

            engine = get_engine()
            drift_config = {"lm": lm, "attributes": list(attributes), "device": device}

            def fit_user(user: str) -> dict[str, float]:
                from persona_engine_drift.generator import DriftGenerator

                drift = DriftGenerator({**drift_config, "dtype": model_dtype(model)})
                return drift.fit_weights(engine, user)[0]

            fit = fit_user
        pairs, sources = collect_pairs(
            vocab,
            pairs_file=pairs_file,
            store=engine.store if engine is not None else None,
            users=users,
            given=parse_user_preferences(user_preferences),
            fit=fit,
        )
        head, meta = train_reward_head(model, vocab, cfg, pairs=pairs, progress=True)
        if sources:
            meta["sources"] = sources
        path = save_head(
            head,
            Path(out) if out else default_head_dir(model, vocab),
            lm=model,
            vocab=vocab,
            meta={**meta, "train_config": cfg.model_dump(mode="json")},
        )
        click.echo(json.dumps({"objective": objective, **meta["metrics"]}, indent=2))
        click.echo(f"saved the PAD reward head to {path}")


def model_dtype(lm: Any) -> str:
    """The dtype name of ``lm``'s weights, as the generators' configs spell it."""
    return str(next(lm.model.parameters()).dtype).removeprefix("torch.")
