"""Preference pairs for PAD's DPO objective: ``(prompt, chosen, rejected)`` labelled with ``p``.

Each pair carries the preference vector ``p`` (attribute weights over the vocabulary) under which
``chosen`` was preferred. Two sources:

- **a JSONL file** (:func:`read_pairs`), one object per line::

      {"prompt": "...", "chosen": "...", "rejected": "...", "preference": "concise"}

  ``preference`` is an attribute name (one-hot), a list of names (weight 1 each) or a mapping
  ``{attribute: weight}``; an optional ``strength`` in ``[0, 1]`` weights the pair in the loss.
- **the engine's store** (:func:`store_pairs`, the product path): every text comparison of each
  user becomes a pair labelled with that user's vector. The vector is the one given for the user
  (``--user-preference alice=concise``, a one-hot of a named dimension, or a mapping), else the
  one fitted from their own comparisons by Drift's closed form, which is exactly the vector the
  ``pad`` generator uses for that user when a request gives no preference. Ties are skipped;
  a comparison's strength weights its pair.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persona_engine.errors import InvalidInputError


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    preference: dict[str, float]
    weight: float = 1.0
    user_id: str = ""


def read_pairs(path: str | Path, vocab: Any) -> list[PreferencePair]:
    """Pairs from a JSONL file with ``prompt``, ``chosen``, ``rejected`` and ``preference``."""
    from .generator import parse_preference

    pairs: list[PreferencePair] = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInputError(f"{path}:{n}: not JSON ({e.msg})") from None
        missing = [k for k in ("chosen", "rejected", "preference") if k not in row]
        if not isinstance(row, dict) or missing:
            raise InvalidInputError(f"{path}:{n}: a pair needs chosen, rejected and preference")
        try:
            preference = parse_preference(row["preference"], vocab)
        except InvalidInputError as e:
            raise InvalidInputError(f"{path}:{n}: {e}") from None
        pairs.append(
            PreferencePair(
                prompt=str(row.get("prompt", "")),
                chosen=str(row["chosen"]),
                rejected=str(row["rejected"]),
                preference=preference,
                weight=float(row.get("strength", 1.0)),
                user_id=str(row.get("user_id", "")),
            )
        )
    if not pairs:
        raise InvalidInputError(f"{path}: no preference pairs")
    return pairs


def store_pairs(
    store: Any,
    vocab: Any,
    *,
    users: Sequence[str] = (),
    given: Mapping[str, Any] | None = None,
    fit: Callable[[str], dict[str, float]] | None = None,
) -> tuple[list[PreferencePair], dict[str, Any]]:
    """Every text comparison of ``users`` (default: every user with comparisons) as a pair
    labelled with the user's vector: ``given[user]`` if there, else ``fit(user)``.

    Returns the pairs and, per user, the vector used and where it came from."""
    from .generator import parse_preference

    given = dict(given or {})
    unknown = sorted(u for u in {*given, *users} if not store.has_user(u))
    if unknown:
        raise InvalidInputError(f"unknown users: {unknown}")
    pairs: list[PreferencePair] = []
    info: dict[str, Any] = {}
    for user in list(users) or store.user_ids():
        comps = [c for c in store.comparisons(user) if c.kind == "text" and not c.tie]
        if not comps:
            continue
        if user in given:
            preference, source = parse_preference(given[user], vocab), "given"
        elif fit is not None:
            preference, source = fit(user), "fitted from the user's comparisons (Drift closed form)"
        else:
            raise InvalidInputError(f"no preference vector for user {user!r}")
        preference = {k: v for k, v in preference.items() if v != 0}
        if not preference:
            continue
        info[user] = {"preference": preference, "source": source, "pairs": len(comps)}
        pairs.extend(
            PreferencePair(c.prompt, c.chosen, c.rejected, preference, float(c.strength), user)
            for c in comps
        )
    if not pairs:
        raise InvalidInputError("the store holds no labelled text comparisons to train on")
    return pairs, info


def collect_pairs(
    vocab: Any,
    *,
    pairs_file: str | Path | None = None,
    store: Any = None,
    users: Sequence[str] = (),
    given: Mapping[str, Any] | None = None,
    fit: Callable[[str], dict[str, float]] | None = None,
) -> tuple[list[PreferencePair], dict[str, Any]]:
    """The training pairs of ``persona pad-train``'s dpo objective: those of ``pairs_file``, then
    the stored comparisons of ``store`` (:func:`store_pairs`); returns them and where they came
    from. ``persona bench generate`` trains its PAD heads through this same function."""
    pairs: list[PreferencePair] = []
    sources: dict[str, Any] = {}
    if pairs_file:
        pairs += read_pairs(pairs_file, vocab)
        sources["file"] = {"path": str(pairs_file), "pairs": len(pairs)}
    if store is not None:
        stored, sources["users"] = store_pairs(store, vocab, users=users, given=given, fit=fit)
        pairs += stored
    return pairs, sources
