"""``persona bench images`` end to end at a toy size: it trains, onboards held-out users, samples,
writes the figures and both picture grids, and resumes from its checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from persona_engine.cli import cli

TOY = {
    "recipe": {
        "pool_size": 120,
        "train_users": 6,
        "pairs_per_user": 5,
        "model": {"tiny": {"image_size": 8, "block_out_channels": [8, 16]}},
        "encoder_training": {"steps": 2, "batch_size": 16, "warmup_steps": 0},
        "pretrain": {"steps": 2, "batch_size": 8, "warmup_steps": 0},
        "dpo": {"steps": 2, "batch_size": 4, "warmup_steps": 0},
    },
    "test_users": 4,
    "samples_per_user": 2,
    "sampling_steps": 2,
}


def _run(tmp_path):
    args = ["bench", "images", "--quiet", "--guidance", "1,2", "--override", json.dumps(TOY)]
    args += ["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_images_bench_writes_figures_and_pictures_and_resumes(tmp_path):
    res = _run(tmp_path)
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "out" / "images.json").read_text())
    assert out["held_out_users"] == 4 and out["shots"] == 4
    assert set(out["conditions"]) == {"ppd_g1", "ppd_g2", "ppd_64pairs_g2"}
    conds = out["conditions"]
    for cond in conds.values():
        lo, hi = cond["win_rate_vs_base_ci95"]
        assert 0.0 <= lo <= cond["win_rate_vs_base"] <= hi <= 1.0
        # the pictures depend on the user: opposite users' images differ (even at toy size, where
        # two DPO steps barely move the zero-initialised user branch)
        assert cond["opposite_feature_distance"] > 1e-4
    # guidance scales the user's effect: at g = 2 opposite users move about twice as far apart
    # (measured 0.0035 vs 0.0017), so a sampler that ignores the scale fails here
    g1, g2 = (conds[c]["opposite_feature_distance"] for c in ("ppd_g1", "ppd_g2"))
    assert 1.5 * g1 < g2 < 2.5 * g1
    # 4 shots or 64 pairs embed each user differently
    assert conds["ppd_64pairs_g2"]["opposite_feature_distance"] != g2
    for name in ("images_grid.png", "images_interpolation.png"):
        assert (tmp_path / "out" / name).read_bytes().startswith(b"\x89PNG")
    assert "| ppd_g1 |" in res.output
    again = _run(tmp_path)  # resumes: the same model, the same figures
    assert again.exit_code == 0, again.output
    assert (
        json.loads((tmp_path / "out" / "images.json").read_text())["conditions"]
        == out["conditions"]
    )


def test_win_rate_counts_wins_and_half_ties():
    from persona_engine.bench.images import _user_metrics

    m = _user_metrics(np.array([2.0, 1.0, 0.0, 5.0]), np.array([1.0, 1.0, 1.0, 1.0]))
    assert m == {"win_rate": (1 + 0.5 + 0 + 1) / 4, "reward_gain": 1.0}


def test_images_bench_bad_options_are_clear_errors(tmp_path):
    res = CliRunner().invoke(cli, ["bench", "images", "--guidance", "x", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "bad --guidance" in res.output
    res = CliRunner().invoke(cli, ["bench", "images", "--override", "{", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "--override" in res.output


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
