"""The scale and onboarding benchmarks run end to end on tiny inputs (their figures are checked
for consistency, not for value)."""

from __future__ import annotations

import json

import pytest

from persona_engine.bench.scale import ScaleConfig, plot_scale, run_scale


@pytest.mark.slow
def test_scale_bench_counts_everything(tmp_path, scale_plugins):
    cfg = ScaleConfig(
        users=600,
        per_user=6,
        pool=200,
        item_dim=8,
        rank=4,
        groups=4,
        train_users=300,
        ingest_batch=1000,
        queries=50,
        recall_queries=20,
        onboard_sample=5,
        workdir=str(tmp_path),
    )
    out = run_scale(cfg, progress=False, log=lambda m: None)
    assert out["ingest"]["comparisons"] == 3600 and out["ingest"]["reingest_added"] == 0
    assert out["counts"]["nothing_lost"] and out["counts"]["profiles_stored"] == 600 - cfg.deletes
    assert out["onboarding"]["counts"]["onboarded"] == 300
    assert out["index"]["kind"] == "flat" and out["queries"]["recall_at_10"] == 1.0
    assert out["updates"]["index_vectors_changed"] == 50
    compaction = out["updates"]["compaction"]  # deleted users: in the old file, then gone
    assert compaction["before"]["ids_in_file"] == cfg.deletes and compaction["free_after"]
    png = plot_scale([out], tmp_path / "scale.png")
    assert png.stat().st_size > 1000
    assert not list(tmp_path.glob("scale-600-*"))  # the work directory is removed


@pytest.mark.slow
def test_onboarding_bench_on_a_synthetic_set(tmp_path, scale_plugins, population):
    from persona_engine.bench.onboarding import (
        OnboardingBenchConfig,
        plot_onboarding,
        run_onboarding_bench,
    )

    path = tmp_path / "pairs.jsonl"
    with open(path, "w") as f:
        for c in population.comparisons(0, population.n_users):
            u = int(c.user_id[1:])
            f.write(
                json.dumps(
                    {
                        **c.model_dump(mode="json"),
                        "meta": {"annotator": {"group": f"g{population.group(u)}"}},
                    }
                )
                + "\n"
            )
    cfg = OnboardingBenchConfig(
        pairs=str(path),
        backend="lowrank-laplace",
        backend_options={"rank": 4, "training": {"epochs": 30, "batch_size": 256, "lr": 0.03}},
        encoder="seeded-random",
        encoder_options={"dim": 8, "seed": 3},
        draws=2,
        active_steps=4,
        random_repeats=1,
        cache=str(tmp_path / "cache.db"),
    )
    out = run_onboarding_bench(cfg, log=lambda m: None)
    acc = out["cold_start"]["accuracy"]
    assert (
        set(acc) >= {"population", "attributes", "embed", "neighbours"}
        and out["data"]["unseen"] == 60
    )
    # the groups carry the users' taste here: the attribute prior must beat the population prior
    assert acc["attributes"]["0"]["accuracy"] > acc["population"]["0"]["accuracy"] + 0.05
    curves = out["active"]["curves"]
    assert (
        set(curves) == {"random", "active-generic", "active-posterior"}
        and len(curves["random"]["accuracy"]) == 5
    )
    assert plot_onboarding(out, tmp_path / "o.png").stat().st_size > 1000
