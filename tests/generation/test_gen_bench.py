"""``persona bench generate`` end to end on the tiny LM: every method decodes, the judges run, the
figures and the markdown tables come out, and bad users are clear errors."""

from __future__ import annotations

import json

from click.testing import CliRunner

from persona_engine.cli import cli


def _data(tmp_path):
    folder = tmp_path / "psoups"
    folder.mkdir()
    prompts = ["Tell me about the sky.", "Describe a red apple.", "What is a cat?"]
    (folder / "koala_eval_50.json").write_text(json.dumps([{"prompt": p} for p in prompts]))
    return folder


def test_bench_generate_runs_every_method_on_a_tiny_lm(tmp_path, tiny_lm_dir):
    out = tmp_path / "generate.json"
    args = ["bench", "generate", "--lm", str(tiny_lm_dir), "--data", str(_data(tmp_path))]
    args += ["--users", "concise,informative", "--prompts", "2", "--train-prompts", "8"]
    args += ["--comparisons", "10", "--max-new-tokens", "4", "--home", str(tmp_path / "home")]
    args += [
        "-o",
        "pool_tokens=6",
        "-o",
        "samples=2",
        "-o",
        "latency_tokens=2",
        "-o",
        "latency_reps=1",
    ]
    args += ["--out", str(out), "--quiet"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert set(r["users"]) == {"concise", "informative"}
    assert set(r["verdict"]) == {"drift", "pad", "prompt"}
    for method in ("plain", "drift", "drift_1", "pad"):
        assert r["latency"][method]["decode_ms_per_token"] > 0
    assert r["opposites"][0]["users"] == ["concise", "informative"]
    assert "| concise (words, lower) |" in res.output


def test_bench_generate_unknown_user_is_a_clear_error(tmp_path, tiny_lm_dir):
    args = ["bench", "generate", "--lm", str(tiny_lm_dir), "--data", str(_data(tmp_path))]
    res = CliRunner().invoke(cli, [*args, "--users", "nobody", "--out", str(tmp_path / "g.json")])
    assert res.exit_code != 0 and "unknown bench users" in res.output
