"""The PAL-style persona set: every chosen statement matches the user's stances better."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from persona_engine.datasets.persona_set import (
    DEFAULT_ATTRIBUTES,
    PersonaSetConfig,
    generate_persona_set,
    write_persona_set,
)
from persona_engine.errors import InvalidInputError


def _sides(source, attributes):
    side = {}
    for attr in attributes:
        for line in open(source / f"{attr}.jsonl", encoding="utf-8"):
            rec = json.loads(line)
            side[(attr, rec["statement"].strip())] = (
                1 if rec["answer_matching_behavior"].strip() == "Yes" else -1
            )
    return side


def test_labels_follow_stances(shared_data, tmp_path):
    source = shared_data / "anthropic_persona" / "persona"
    cfg = PersonaSetConfig(users=12, per_user=15, groups=3, seed=4)
    records = list(generate_persona_set(source, cfg))
    assert len(records) == 12 * 15
    side = _sides(source, DEFAULT_ATTRIBUTES)
    for rec in records:
        stances = rec["meta"]["stances"]
        utility = {
            k: stances.get(rec["meta"][f"{k}_attribute"], 0)
            * side[(rec["meta"][f"{k}_attribute"], rec[k])]
            for k in ("chosen", "rejected")
        }
        assert utility["chosen"] > utility["rejected"]
    # users of one persona type share stances, and types take opposite sides somewhere
    users = {r["user_id"]: (r["meta"]["group"], r["meta"]["stances"]) for r in records}
    groups: dict[int, list[dict[str, int]]] = {}
    for group, stances in users.values():
        groups.setdefault(group, []).append(stances)
    assert len(groups) == 3
    shared = {}  # each type's stances held by more than half of its users
    for group, members in groups.items():
        held = Counter(item for stances in members for item in stances.items())
        shared[group] = {a: s for (a, s), n in held.items() if 2 * n > len(members)}
        assert shared[group], group
    opposite = {
        (g, h, a)
        for g in shared
        for h in shared
        for a in shared[g].keys() & shared[h].keys()
        if g < h and shared[g][a] == -shared[h][a]
    }
    assert opposite  # e.g. one type for an attribute, another against it
    out = tmp_path / "set.jsonl"
    assert write_persona_set(source, out, cfg) == len(records)
    assert [json.loads(line) for line in out.read_text().splitlines()] == records  # seeded
    with pytest.raises(InvalidInputError):
        list(generate_persona_set(tmp_path / "missing", cfg))
