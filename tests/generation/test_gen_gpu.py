"""The generators on a CUDA device (``gpu`` marker; skipped where there is none; run them with
``benchmarks/gpu_smoke.sh``). ``PERSONA_GPU_TEST_DEVICE=cpu`` runs the same checks on the CPU,
to check the tests themselves on a machine without a GPU."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from click.testing import CliRunner
from gen_tiny_lm import PROMPT, rates
from test_gen_drift_small_lm import small_lm_dir  # noqa: F401  (a fixture)
from test_gen_pad_dpo import colour_pairs, dpo_config

DEVICE = os.environ.get("PERSONA_GPU_TEST_DEVICE", "cuda")
N = 32

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA device"
    ),
]


class DeviceProbe:
    """A logits processor that records where the scores it sees live."""

    def __init__(self) -> None:
        self.devices: set[str] = set()

    def __call__(self, input_ids, scores):
        self.devices |= {scores.device.type, input_ids.device.type}
        return scores


def test_decoding_stays_on_the_device_and_matches_the_cpu(tiny_lm_dir):
    from persona_engine.lm import DecodingConfig, collect_texts, decode_tokens, load_lm

    cpu, dev = load_lm(str(tiny_lm_dir)), load_lm(str(tiny_lm_dir), device=DEVICE)
    assert next(dev.model.parameters()).device.type == torch.device(DEVICE).type
    cfg = DecodingConfig(max_new_tokens=12, repetition_penalty=1.1)
    ctx = [[cpu.chat_ids(PROMPT, s)] for s in ("sys_red", "sys_neg", "sys_long")]
    probe = DeviceProbe()
    ours = collect_texts(dev, decode_tokens(dev, ctx, cfg, processors=[probe]))
    assert probe.devices == {torch.device(DEVICE).type}  # no full-vocabulary logits on the CPU
    assert ours == collect_texts(cpu, decode_tokens(cpu, ctx, cfg))
    sampled = DecodingConfig(max_new_tokens=12, do_sample=True, top_p=0.9, seed=1)
    assert rates(collect_texts(dev, decode_tokens(dev, ctx * 8, sampled)))["fluent"] >= 0.9


@pytest.fixture(scope="module")
def dpo_head_on_device(tiny_lm_dir, tiny_vocab_path):
    from persona_engine_drift.attributes import load_vocabulary
    from persona_engine_pad.pairs import PreferencePair
    from persona_engine_pad.trainer import train_reward_head

    from persona_engine.lm import load_lm

    lm = load_lm(str(tiny_lm_dir), device=DEVICE, dtype="auto")
    vocab = load_vocabulary(str(tiny_vocab_path))
    pairs = [
        PreferencePair(r["prompt"], r["chosen"], r["rejected"], {r["preference"]: 1.0})
        for r in colour_pairs(48)
    ]
    cfg = dpo_config()
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"device": DEVICE})})
    return train_reward_head(lm, vocab, cfg, pairs=pairs)


def test_pad_trained_and_decoding_on_the_device_concurrently(
    tiny_lm_dir, tiny_vocab_path, dpo_head_on_device
):
    from persona_engine_pad import PadGenerator

    head, meta = dpo_head_on_device
    assert meta["metrics"]["train_loss"] < 0.5 * meta["metrics"]["loss_before"]

    def pad(**cfg):
        gen = PadGenerator(
            {
                "lm": str(tiny_lm_dir),
                "attributes": [str(tiny_vocab_path)],
                "device": DEVICE,
                "dtype": "auto",
                "max_new_tokens": 12,
                "do_sample": True,
                "repetition_penalty": 1.0,
                "preference_prompt": False,
                "rm_weight": 1.0,
                "seed": 3,
                **cfg,
            }
        )
        gen.set_head(head, meta)
        return gen

    a, b = pad(), pad(rm_weight=0.8)
    red = rates(a.generate_batch([PROMPT] * N, ["red"] * N))
    blue = rates(a.generate_batch([PROMPT] * N, ["blue"] * N))
    assert red["red"] > 0.8 and blue["blue"] > 0.8 and red["fluent"] >= 0.9, (red, blue)
    jobs = [(a, "red"), (b, "blue"), (a, "blue"), (b, "red")] * 3
    alone = [g.generate_batch([PROMPT] * 3, [p] * 3) for g, p in jobs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda j: j[0].generate_batch([PROMPT] * 3, [j[1]] * 3), jobs))
    assert together == alone


@pytest.mark.parametrize("small_device", [DEVICE, "cpu"])
def test_drift_with_a_small_lm_on_its_own_device(
    tiny_lm_dir,
    tiny_vocab_path,
    small_lm_dir,  # noqa: F811
    small_device,
):
    from persona_engine_drift import DriftGenerator

    gen = DriftGenerator(
        {
            "lm": str(tiny_lm_dir),
            "small_lm": str(small_lm_dir),
            "small_lm_device": small_device,
            "attributes": [str(tiny_vocab_path)],
            "device": DEVICE,
            "dtype": "auto",
            "max_new_tokens": 12,
            "do_sample": True,
            "repetition_penalty": 1.0,
            "beta": 1.0,
            "seed": 3,
        }
    )
    lm, slm = gen.models()
    assert next(slm.model.parameters()).device.type == torch.device(small_device).type
    red = rates(gen.generate_batch([PROMPT] * N, [{"red": 1.0}] * N))
    assert red["red"] > 0.7 and red["fluent"] >= 0.9, red


def test_pad_train_cli_on_the_device(tmp_path, tiny_lm_dir, tiny_vocab_path):
    from persona_engine.cli import cli

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in colour_pairs(16)))
    out = tmp_path / "head"
    args = ["pad-train", "--lm", str(tiny_lm_dir), "-a", str(tiny_vocab_path), "--pairs"]
    res = CliRunner().invoke(
        cli,
        [
            *args,
            str(pairs),
            "--device",
            DEVICE,
            "--dtype",
            "auto",
            "--epochs",
            "2",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    info = json.loads((out / "head.json").read_text())
    assert info["train_config"]["training"]["device"] == DEVICE
    assert info["metrics"]["train_loss"] < info["metrics"]["loss_before"]
