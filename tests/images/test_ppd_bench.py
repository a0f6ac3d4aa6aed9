"""``persona bench images`` end to end at a toy size: it trains, onboards both splits of held-out
users, samples, writes every seed's figures, their summary (mean over seeds, never the best) and
both picture grids, records the encoder, and resumes from its checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from ppd_support import toy_recipe

from persona_engine.cli import cli

TOY = {
    "recipe": toy_recipe(train_users=6, encoder_steps=2, steps=2),
    "test_users": 4,
    "samples_per_user": 2,
    "sampling_steps": 2,
}


def _run(tmp_path):
    args = ["bench", "images", "--quiet", "--guidance", "1,2", "--override", json.dumps(TOY)]
    args += ["--seeds", "0,1"]
    args += ["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_images_bench_writes_figures_and_pictures_and_resumes(tmp_path):
    res = _run(tmp_path)
    assert res.exit_code == 0, res.output
    seeds = [json.loads((tmp_path / "out" / f"images_seed{s}.json").read_text()) for s in (0, 1)]
    out = seeds[0]
    assert out["held_out_users"] == 4 and out["shots"] == 4
    assert set(out["conditions"]) == {"ppd_g1", "ppd_g2", "ppd_64pairs_g2"}
    # the encoder behind every number: the self-supervised default, not the oracle
    assert out["encoder"]["name"] == "tiny-image" and out["encoder"]["oracle"] is False
    assert out["encoder"]["objective"] == "self-supervised"
    assert out["encoder"]["id"].startswith("tiny-image:")
    assert set(out["encoder"]["probe_r2"]) == {"redness", "brightness", "x_position"}
    # without VICReg's variance and covariance terms (the default), whitened, and how many
    # directions its embedding spread over as trained
    assert out["encoder"]["variance_covariance"] is None and out["encoder"]["whiten"]
    assert 1.0 <= out["encoder"]["spectrum_as_trained"]["effective_rank"] <= 32.0
    assert len(out["load_average"]) == 3
    # users live in the population's space (the default): its rank and the figures that chose it
    space = out["user_space"]
    assert space["kind"] == "population" and 1 <= space["rank"] <= 32
    assert space["agreement_chosen"] == max(space["agreement_by_rank"])
    assert summary_space(tmp_path) == ("population", [r["user_space"]["rank"] for r in seeds])
    assert -1.0 <= out["embedding_cosine_4_vs_64_pairs"] <= 1.0
    # the held-out region: users from the octant no training user occupies
    region = out["held_out_region"]
    assert region["octant"] == [1, -1, 1] and region["users"] == 4
    assert set(region["conditions"]) == {"ppd_g1", "ppd_g2"}
    # Engine.generate was timed with a stored user, their profile
    assert out["api_check"]["user_source"] == "onboarded" and out["api_check"]["images"] == 4
    conds = out["conditions"]
    for cond in conds.values():
        lo, hi = cond["win_rate_vs_base_ci95"]
        assert 0.0 <= lo <= cond["win_rate_vs_base"] <= hi <= 1.0
        # the pictures depend on the user: opposite users' images differ (even at toy size, where
        # two DPO steps barely move the zero-initialised user branch)
        assert cond["opposite_feature_distance"] > 1e-4
    # guidance scales the user's effect: at g = 2 opposite users move about twice as far apart,
    # so a sampler that ignores the scale fails here
    g1, g2 = (conds[c]["opposite_feature_distance"] for c in ("ppd_g1", "ppd_g2"))
    assert 1.5 * g1 < g2 < 2.5 * g1
    # 4 shots or 64 pairs embed each user differently
    assert conds["ppd_64pairs_g2"]["opposite_feature_distance"] != g2
    for name in ("images_grid.png", "images_interpolation.png"):
        assert (tmp_path / "out" / name).read_bytes().startswith(b"\x89PNG")
    # the summary: the mean over both seeds, each seed, the worst; never the best alone
    summary = json.loads((tmp_path / "out" / "images.json").read_text())
    head = summary["headline"]
    per_seed = [r["conditions"]["ppd_g2"]["win_rate_vs_base"] for r in seeds]
    assert head["per_seed"] == per_seed and head["mean"] == pytest.approx(np.mean(per_seed))
    assert head["worst"] == min(per_seed) and head["ci95"][0] <= head["mean"] <= head["ci95"][1]
    g1_seeds = [r["conditions"]["ppd_g1"]["win_rate_vs_base"] for r in seeds]
    g1 = summary["summary"]["like_training"]["ppd_g1"]["win_rate_vs_base"]
    assert g1_seeds[0] != g1_seeds[1]  # measured 0.25 and 0.5: the mean is neither seed
    assert g1["mean"] == pytest.approx(np.mean(g1_seeds)) and g1["worst"] == min(g1_seeds)
    assert summary["per_seed_files"] == ["images_seed0.json", "images_seed1.json"]
    ranks = [r["encoder"]["spectrum_as_trained"]["effective_rank"] for r in seeds]
    assert summary["encoder_effective_rank"]["per_seed"] == ranks
    assert set(summary["summary"]) == {"like_training", "held_out_region"}
    assert "| held_out_region | ppd_g2 |" in res.output
    assert "tiny-image (self-supervised, whitened)" in res.output
    assert "users in the population's space (rank" in res.output
    again = _run(tmp_path)  # resumes: the same model, the same figures
    assert again.exit_code == 0, again.output
    assert (
        json.loads((tmp_path / "out" / "images_seed0.json").read_text())["conditions"]
        == out["conditions"]
    )


def summary_space(tmp_path):
    summary = json.loads((tmp_path / "out" / "images.json").read_text())
    return summary["user_space"], summary["user_space_rank"]


def test_win_rate_counts_wins_and_half_ties():
    from persona_engine.bench.images import _user_metrics

    m = _user_metrics(np.array([2.0, 1.0, 0.0, 5.0]), np.array([1.0, 1.0, 1.0, 1.0]))
    assert m == {"win_rate": (1 + 0.5 + 0 + 1) / 4, "reward_gain": 1.0}


def test_images_bench_bad_options_are_clear_errors(tmp_path):
    res = CliRunner().invoke(cli, ["bench", "images", "--guidance", "x", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "bad --guidance" in res.output
    res = CliRunner().invoke(cli, ["bench", "images", "--seeds", "a", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "--seeds" in res.output
    res = CliRunner().invoke(cli, ["bench", "images", "--override", "{", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "--override" in res.output


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
