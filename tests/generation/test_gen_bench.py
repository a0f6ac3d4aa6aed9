"""``persona bench generate`` end to end on the tiny LM: PAD is trained by DPO on the simulated
users' pairs, every method and baseline decodes (guidance and best-of-N included, strengths swept),
the evaluation judges (not the training ones) make the figures, the paired differences and the
sweep PNG come out, the tables can be rebuilt from the JSON, and bad users are clear errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from persona_engine.bench.eval_judges import MEASURES
from persona_engine.cli import cli


def _data(tmp_path):
    folder = tmp_path / "psoups"
    folder.mkdir()
    prompts = ["Tell me about the sky.", "Describe a red apple.", "What is a cat?"]
    (folder / "koala_eval_50.json").write_text(json.dumps([{"prompt": p} for p in prompts]))
    return folder


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, tiny_lm_dir):
    tmp_path = tmp_path_factory.mktemp("bench_generate")
    out = tmp_path / "generate.json"
    args = ["bench", "generate", "--lm", str(tiny_lm_dir), "--data", str(_data(tmp_path))]
    args += ["--users", "concise,informative,elementary_friendly", "--prompts", "3"]
    args += ["--seeds", "0,1", "--train-prompts", "8", "--comparisons", "10"]
    args += ["--max-new-tokens", "6", "--home", str(tmp_path / "home")]
    args += ["--pad-weights", "0.5,2", "--drift-betas", "1", "--guidance", "2"]
    for option in ("pool_tokens=6", "samples=2", "latency_tokens=2", "dpo_epochs=2", "bestofn=2"):
        args += ["-o", option]
    args += ["--out", str(out), "--quiet"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text()), res.output, out


def test_pad_is_trained_by_dpo_on_the_users_stored_pairs(bench_run):
    r, _, _ = bench_run
    assert [t["seed"] for t in r["pad_training"]] == [0, 1]
    for t in r["pad_training"]:
        assert t["objective"] == "dpo"
        # the pairs came from the store: every user's comparisons, labelled with their profile
        assert set(t["sources"]["users"]) == {"concise", "informative", "elementary_friendly"}
        assert t["sources"]["users"]["elementary_friendly"]["preference"] == {
            "elementary": 1.0,
            "friendly": 1.0,
        }
        assert t["metrics"]["pairs"] == 30
        assert set(t["trained"]) == {"concise", "informative", "elementary", "friendly"}


def test_every_figure_is_measured_by_the_evaluation_judges(bench_run):
    r, _, _ = bench_run
    assert r["users"]["concise"]["eval_targets"] == [["content_words", -1]]
    assert r["users"]["concise"]["train_targets"] == [["words", -1]]
    assert r["users"]["elementary_friendly"]["eval_targets"] == [
        ["readability_grade", -1],
        ["sentiment", 1],
    ]
    for seed in ("0", "1"):
        for per in r["scores"][seed].values():
            for measured in per.values():
                assert set(measured) == set(MEASURES)
                assert len(measured["logprob"]) == 3
    plain = r["summary"]["users"]["concise"]["methods"]["plain"]
    assert set(plain["judges"]) == {"content_words"}
    assert plain["perplexity"] > 1 and -1 <= plain["relevance"] <= 1
    # no training judge is reported
    assert "reading_grade" not in json.dumps(r["summary"])
    assert "friendliness" not in json.dumps(r["summary"])


def test_baselines_and_sweeps_are_in_every_table(bench_run):
    r, output, out = bench_run
    methods = set(r["summary"]["mean"])
    assert methods == {
        "plain",
        "prompt",
        "guidance@2",
        "bestofn",
        "pad@0.5",
        "pad@1",
        "pad@2",
        "drift@1",
        "drift@0.5",
    }
    assert r["sweeps"] == {"pad": [0.5, 1.0, 2.0], "drift": [1.0, 0.5], "guidance": [2.0]}
    for u in ("concise", "informative", "elementary_friendly"):
        pad = r["summary"]["users"][u]["methods"]["pad@1"]
        assert pad["matched_guidance"] in ("prompt", "guidance@2")
        assert set(pad["vs_guidance"]) == {"prompt", "guidance@2"}
        assert "vs_prompt" in r["summary"]["users"][u]["methods"]["drift@0.5"]
    vs = r["summary"]["mean"]["pad@1"]["vs_prompt"]
    assert vs["prompts"] == [3, 3] and len(vs["per_seed"]) == 2
    assert set(r["summary"]["verdict"]) == {"pad", "drift"}
    for m in ("plain", "guidance", "drift", "pad"):
        assert len(r["latency"][m]["runs_decode_ms_per_token"]) == 3
    for heading in ("prompt-only", "guidance g=2", "best-of-2", "PAD w=1", "Drift beta=0.5"):
        assert heading in output
    assert "- guidance (matched g)" in output and "**mean over users**" in output
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_tables_are_rebuilt_from_the_saved_json(bench_run, tmp_path):
    r, output, out = bench_run
    plot = tmp_path / "again.png"
    res = CliRunner().invoke(
        cli,
        ["bench", "generate", "--report", str(out), "--plot", str(plot)],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output

    def tables(text):
        return text[text.index("Target-attribute gain") : text.index("Run time")]

    assert tables(res.output) == tables(output)
    assert plot.is_file()


def test_bench_generate_unknown_user_is_a_clear_error(tmp_path, tiny_lm_dir):
    args = ["bench", "generate", "--lm", str(tiny_lm_dir), "--data", str(_data(tmp_path))]
    res = CliRunner().invoke(cli, [*args, "--users", "nobody", "--out", str(tmp_path / "g.json")])
    assert res.exit_code != 0 and "unknown bench users" in res.output


def test_every_lm_of_the_bench_runs_in_the_device_and_dtype_asked(
    tmp_path, tiny_lm_dir, monkeypatch
):
    """``-o dtype=bfloat16``: the base LM, the generators' (PAD, Drift, best-of-N) and the judges'
    are one bfloat16 copy; none is loaded in float32 beside it (what a GPU run relies on)."""
    import persona_engine.lm as lm_module

    loaded: dict = {}
    monkeypatch.setattr(lm_module, "_LOADED", loaded)  # this run's loads only
    out = tmp_path / "generate.json"
    args = ["bench", "generate", "--lm", str(tiny_lm_dir), "--data", str(_data(tmp_path))]
    args += ["--users", "concise", "--prompts", "1", "--seeds", "0", "--train-prompts", "16"]
    args += ["--comparisons", "10", "--max-new-tokens", "4", "--home", str(tmp_path / "home")]
    args += ["--pad-weights", "1", "--drift-betas", "1", "--guidance", "2"]
    for option in ("pool_tokens=4", "samples=2", "latency_tokens=2", "dpo_epochs=1", "bestofn=2"):
        args += ["-o", option]
    args += ["-o", "dtype=bfloat16", "--out", str(out), "--quiet"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert {(device, dtype) for _, device, dtype in loaded} == {("cpu", "bfloat16")}
    assert json.loads(out.read_text())["config"]["dtype"] == "bfloat16"
