"""persona profile / similar / next-queries: happy paths and clean errors."""

from __future__ import annotations

import json

from click.testing import CliRunner

from persona_engine.cli import cli


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_profile_show_similar_next_queries(trained, population):
    uid = population.user_id(2)
    shown = run("profile", "show", uid)
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["profile"]["user_id"] == uid and data["n_comparisons"] == 20
    cold = json.loads(run("profile", "show", population.user_id(110)).output)
    assert cold["profile"] is None and cold["cold_start"]["rule"] == "neighbours"
    near = run("similar", uid, "-k", "3")
    assert near.exit_code == 0 and len(near.output.strip().splitlines()) == 3
    items = [f"item-{i:06d}" for i in range(5)]
    q = run("next-queries", uid, *items, "-n", "2")
    assert q.exit_code == 0 and len(q.output.strip().splitlines()) == 2
    for line in q.output.strip().splitlines():
        info, a, b = line.split("\t")
        assert float(info) >= 0 and a in items and b in items
    idx = json.loads(run("profile", "index", "--recall-queries", "10").output)
    assert idx["users"] == 100 and idx["kind"] == "flat" and idx["recall_at_10"] == 1.0


def test_profile_export_import_set_update(trained, population, tmp_path):
    uid = population.user_id(4)
    out = tmp_path / "u.json"
    assert run("profile", "export", uid, "-o", str(out)).exit_code == 0
    res = run("profile", "import", str(out), "--as", "copy-of-4")
    assert res.exit_code == 0 and "imported copy-of-4 under lowrank-laplace-v1" in res.output
    res = run("profile", "set", "copy-of-4", "age=30", "lang=fr")
    assert json.loads(res.output) == {"age": 30, "lang": "fr"}
    res = run("profile", "update", population.user_id(111))
    assert res.exit_code == 0 and json.loads(res.output)["onboarded"] == 1


def test_cli_error_paths(trained, tmp_path):
    for args, message in [
        (("profile", "show", "nobody"), "unknown user"),
        (("similar", "nobody"), "unknown user"),
        (("next-queries", "u0000001", "just-one"), "two distinct candidates"),
        (("profile", "import", str(tmp_path / "missing.json")), "no such file"),
        (("profile", "export", "nobody"), "unknown user"),
        (("profile", "set", "u0000001", "no-equals-sign"), "KEY=VALUE"),
        (("profile", "update", "nobody"), "unknown users"),
        (("profile", "show", "u0000001", "--model", "nope-v3"), "unknown model"),
    ]:
        res = CliRunner().invoke(cli, list(args))
        assert res.exit_code == 1, (args, res.output)
        assert message in res.output, (args, res.output)
        assert "Traceback" not in res.output
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    res = CliRunner().invoke(cli, ["profile", "import", str(bad)])
    assert res.exit_code == 1 and "not JSON" in res.output


def test_similar_with_bt_is_a_clear_error(trained):
    trained.train("bt", {"training": {"epochs": 3}}, rederive=False)
    res = CliRunner().invoke(cli, ["similar", "u0000001"])
    assert res.exit_code == 1 and "personalized backend" in res.output


def test_profile_index_compact_drops_deleted_users_from_the_saved_file(trained, population):
    from persona_engine.retrieval import ProfileIndex

    uid = population.user_id(6)
    rec = trained.model_record()
    trained.profile_index()
    trained.delete_user(uid)
    saved = trained._indexes.path(rec.id)
    assert ProfileIndex.saved_holds(saved, uid)  # a tombstone hides it until compaction
    res = run("profile", "index", "--compact")
    assert res.exit_code == 0 and json.loads(res.output)["compacted"] == [rec.id]
    assert not ProfileIndex.saved_holds(saved, uid)
