"""Real data: ``persona ppd train --pairs F.jsonl --backbone PATH`` on Pick-a-Pic-style lines
(user, prompt, chosen and rejected image paths), streamed from disk into a tiny diffusers
pipeline saved locally; resumable; clear errors that name the line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from persona_engine_ppd.checkpoint import build_model
from persona_engine_ppd.config import AdapterConfig, DPOConfig, ModelConfig
from persona_engine_ppd.pairs_data import (
    StreamingPairs,
    index_pairs,
    pair_feature_differences,
)
from persona_engine_ppd.synthetic import render_shapes
from persona_engine_ppd.trainer import finetune_ppd_on_pairs
from ppd_support import write_png

from persona_engine.cli import cli
from persona_engine.engine import Engine
from persona_engine.errors import InvalidInputError
from persona_engine.plugins import get_encoder

ENCODER = {"image_size": 8, "dim": 6}


def _pairs_file(tmp_path, users=3, per_user=3):
    """Pick-a-Pic's layout: one caption, two images (paths relative to the file), one user."""
    imgs = render_shapes(2 * users * per_user, size=8, rng=np.random.default_rng(0)).images
    (tmp_path / "img").mkdir(exist_ok=True)
    lines = []
    for k in range(users * per_user):
        a = write_png(tmp_path / "img" / f"{k}a.png", imgs[2 * k].transpose(1, 2, 0))
        b = write_png(tmp_path / "img" / f"{k}b.png", imgs[2 * k + 1].transpose(1, 2, 0))
        lines.append(
            {
                "user_id": f"u{k % users}",
                "prompt": "a cat" if k % 2 else "a dog",
                "chosen": f"img/{a.rsplit('/', 1)[1]}",
                "rejected": b,  # absolute paths work too
            }
        )
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _model(pipeline_dir):
    cfg = ModelConfig(
        backbone="pipeline",
        pipeline_path=str(pipeline_dir),
        adapter=AdapterConfig(n_tokens=2),
        encoder_config=ENCODER,
    )
    return build_model(cfg, ENCODER["dim"])


def test_the_stream_loads_images_only_when_it_reaches_them(tmp_path, monkeypatch):
    from PIL import Image

    index = index_pairs(_pairs_file(tmp_path))
    assert len(index) == 9 and index.users == ["u0", "u1", "u2"]
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda p, *a, **k: opened.append(p) or real_open(p))
    it = iter(StreamingPairs(index, 8, seed=3))
    first = [next(it) for _ in range(2)]
    assert len(opened) == 4  # two pairs read, two images each: nothing else in memory
    assert first[0]["chosen"].shape == (3, 8, 8) and 0 <= float(first[0]["chosen"].min())
    # a later position continues the same order: what a resumed run reads
    later = next(iter(StreamingPairs(index, 8, seed=3, start=1)))
    assert later["index"] == first[1]["index"]
    whole = [next(it)["index"] for _ in range(7)]
    assert sorted([f["index"] for f in first] + whole) == list(range(9))  # one pass, each once


def test_a_resumed_streaming_run_repeats_the_uninterrupted_one(tmp_path, pipeline_dir):
    torch.set_num_threads(1)
    index = index_pairs(_pairs_file(tmp_path))
    diffs = pair_feature_differences(
        index, get_encoder("tiny-image")(ENCODER), tmp_path / "w" / "f.npy"
    )
    assert diffs.shape == (9, 6) and (tmp_path / "w" / "f.npy").is_file()
    cfg = DPOConfig(
        steps=3, batch_size=2, accumulation_steps=2, lr=0.05, warmup_steps=0, checkpoint_every=1
    )
    straight = _model(pipeline_dir)
    result = finetune_ppd_on_pairs(straight, index, diffs, cfg)
    assert result.history[-1]["pairs_per_s"] > 0 and "implicit_acc" in result.history[-1]
    half = _model(pipeline_dir)
    finetune_ppd_on_pairs(
        half, index, diffs, cfg.model_copy(update={"steps": 2}), checkpoint_dir=tmp_path / "ck"
    )
    again = _model(pipeline_dir)
    resumed = finetune_ppd_on_pairs(again, index, diffs, cfg, checkpoint_dir=tmp_path / "ck")
    assert resumed.resumed_from == 2
    for (name, a), (_, b) in zip(
        straight.adapter.state_dict().items(), again.adapter.state_dict().items()
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    assert any(torch.count_nonzero(b.to_v.weight) for b in again.adapter.branches.values())


def test_persona_ppd_train_registers_a_model_users_generate_from(tmp_path, pipeline_dir):
    pairs = _pairs_file(tmp_path)
    config = tmp_path / "dpo.json"
    config.write_text(json.dumps({"batch_size": 2, "warmup_steps": 0, "lr": 0.05}))
    args = ["ppd", "train", "--pairs", str(pairs), "--backbone", str(pipeline_dir), "--quiet"]
    args += ["--encoder", "tiny-image", "--encoder-config", json.dumps(ENCODER)]
    args += ["--config", str(config), "--steps", "2", "--work", str(tmp_path / "work")]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "trained ppd-v1 on 9 pairs of 3 users in 2 steps" in res.output
    assert "pairs/s" in res.output
    assert json.loads((tmp_path / "work" / "dpo" / "state.json").read_text())["step"] == 2
    engine = Engine()
    comps = [json.loads(line) for line in pairs.read_text().splitlines()][:3]
    for c in comps:
        c["chosen"] = (
            str(tmp_path / c["chosen"]) if not c["chosen"].startswith("/") else c["chosen"]
        )
    engine.generator("ppd").onboard(engine, "new", [{**c, "user_id": "new"} for c in comps])
    out = engine.generate("new", "a cat", generator="ppd", n_images=2, steps=2)
    assert len(out.images) == 2 and out.info["user_source"] == "onboarded"
    assert out.info["backbone"] == "pipeline"


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 2: not valid JSON"),
        ('{"user_id": "u", "prompt": "p", "chosen": "img/0a.png"}', "line 2: missing or empty"),
        (
            '{"user_id": "u", "prompt": "p", "chosen": "img/0a.png", "rejected": "gone.png"}',
            "line 2: no such image file",
        ),
    ],
)
def test_a_bad_line_or_a_missing_image_names_the_line(tmp_path, line, message):
    good = _pairs_file(tmp_path).read_text().splitlines()[0]
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n{line}\n")
    with pytest.raises(InvalidInputError, match=message):
        index_pairs(path)


def test_an_image_deleted_after_indexing_is_a_clear_error_when_reached(tmp_path):
    index = index_pairs(_pairs_file(tmp_path))
    (tmp_path / "img" / "0a.png").unlink()
    with pytest.raises(InvalidInputError, match="line 1: no such image file"):
        for _ in StreamingPairs(index, 8):
            pass


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
