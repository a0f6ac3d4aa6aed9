"""A process killed with SIGKILL during ingest or training leaves the store consistent and the
last good model loadable. Each test kills a real subprocess, then reopens the store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from service_support import population

from persona_engine.engine import Engine
from persona_engine.store import Store

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PERSONA_ENGINE_LOAD_PLUGINS": "bt,encoders"}
CANDIDATES = [
    "a long and detailed answer about topic 9 with many careful words",
    "short 9",
    "medium answer 9",
]


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM comparisons").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def _check_consistent(db: Path) -> Store:
    store = Store(db)
    assert store.integrity_check() == "ok"
    assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []
    return store


def test_sigkill_during_ingest_keeps_whole_batches(tmp_path: Path) -> None:
    home, path, n = tmp_path / "home", tmp_path / "big.jsonl", 12_000
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(
                json.dumps(
                    {
                        "user_id": f"u{i % 300}",
                        "prompt": "p",
                        "chosen": f"answer {i}",
                        "rejected": f"other {i}",
                    }
                )
                + "\n"
            )
    proc = subprocess.Popen(
        [sys.executable, "-m", "persona_engine.cli", "ingest", str(path)],
        env={**ENV, "PERSONA_ENGINE_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while _count(home / "persona.db") == 0:  # the first batch of 2000 has committed: kill now
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    store = _check_consistent(home / "persona.db")
    stored = store.count_comparisons()
    assert 0 < stored < n and stored % 2000 == 0, stored  # whole transactions only
    texts = {
        r[0]
        for r in store.db.execute(
            "SELECT i.text FROM comparisons c JOIN items i ON i.hash = c.chosen_hash"
        )
    }
    assert texts == {f"answer {i}" for i in range(stored)}  # a prefix of the file, nothing torn
    report = Engine(home, store=store, encoder="hashing").ingest(path)
    assert (report.added, report.duplicates, store.count_comparisons()) == (n - stored, stored, n)


# The subprocesses train the numpy-only test backend (svc_peruser), so they start in about a second
# (no torch import); what is under test (saving, registering, activating) is common to all backends.
PRELUDE = f"""
import os, pathlib, signal, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import peruser_backend
from persona_engine.plugins import get_plugin_manager
get_plugin_manager().register_module(peruser_backend, name="svc_test")

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
"""

KILL_SCRIPT = (
    PRELUDE
    + """
point, home = sys.argv[1], pathlib.Path(sys.argv[2])
from persona_engine.engine import Engine
from persona_engine.backends import base
from persona_engine.store import Store

if point == "fit":  # the test kills us from outside, in the middle of fitting
    fit = base.RewardBackend.fit
    def fit_forever(self, data, **kwargs):
        (home / "fitting").touch()
        while True:
            fit(self, data, **kwargs)
    base.RewardBackend.fit = fit_forever
if point == "save":  # the model files are written to the temporary directory, not yet renamed
    import safetensors.numpy
    save_file = safetensors.numpy.save_file
    def save_then_die(*args, **kwargs):
        save_file(*args, **kwargs)
        die()
    safetensors.numpy.save_file = save_then_die
if point == "activate":  # saved, registered inactive, profiles written; killed before the switch
    Store.activate_model = die
Engine(home, encoder="hashing", encoder_config={"dim": 32}).train("svc_peruser", activate=True)
print("finished")
"""
)

MODEL = "svc_peruser"


@pytest.fixture
def home_with_v1(tmp_path: Path) -> tuple[Path, list[float]]:
    from service_support import make_engine

    home = tmp_path / "home"
    engine = make_engine(home)
    engine.record(population())
    engine.train(MODEL)
    scores = engine.score("u0", "question 9", CANDIDATES)
    engine.store.close()
    return home, scores


@pytest.mark.parametrize("point", ["fit", "save", "activate"])
def test_sigkill_during_training_keeps_the_last_good_model(
    home_with_v1: tuple[Path, list[float]], point: str
) -> None:
    from service_support import make_engine

    home, scores_v1 = home_with_v1
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, point, str(home)],
        env={**ENV, "PERSONA_ENGINE_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if point == "fit":
        deadline = time.time() + 120
        while not (home / "fitting").exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.02)
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL and "finished" not in out, err[-2000:]

    assert _check_consistent(home / "persona.db").active_model(MODEL).id == f"{MODEL}-v1"
    engine = make_engine(home)  # a fresh process's view
    assert engine.score("u0", "question 9", CANDIDATES) == scores_v1
    versions = {m.id: m.active for m in engine.store.models()}
    published = sorted(
        p.name for p in (home / "models" / MODEL).iterdir() if not p.name.startswith(".")
    )
    if point == "activate":
        assert versions == {f"{MODEL}-v1": True, f"{MODEL}-v2": False} and published == ["v1", "v2"]
    else:
        assert versions == {f"{MODEL}-v1": True} and published == [
            "v1"
        ]  # no half-written v2 is visible
    rec = engine.train(MODEL)  # and training goes on from here
    assert rec.active and rec.id == (f"{MODEL}-v3" if point == "activate" else f"{MODEL}-v2")


RESAVE_SCRIPT = (
    PRELUDE
    + """
from persona_engine.backends.base import load_backend
path = sys.argv[1]
backend = load_backend(path)
real_replace, calls = os.replace, []
def replace_then_die(src, dst):  # the first rename moves the published version aside: die right after
    real_replace(src, dst)
    calls.append(dst)
    if len(calls) == 1:
        die()
os.replace = replace_then_die
backend.save(path)  # re-saving a published version (as deleting a user rewrites model files)
print("finished")
"""
)


def test_sigkill_while_a_published_model_is_rewritten_keeps_it_loadable(
    home_with_v1: tuple[Path, list[float]],
) -> None:
    from service_support import make_engine

    from persona_engine.paths import previous_copy

    home, scores_v1 = home_with_v1
    path = home / "models" / MODEL / "v1"
    proc = subprocess.run(
        [sys.executable, "-c", RESAVE_SCRIPT, str(path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL and "finished" not in proc.stdout, proc.stderr[-2000:]
    assert not (path / "config.json").exists()  # killed inside the window between the two renames
    _check_consistent(home / "persona.db")
    engine = make_engine(home)
    assert (
        engine.score("u0", "question 9", CANDIDATES) == scores_v1
    )  # the last good files still load
    rec, backend = engine.load_model(f"{MODEL}-v1")
    backend.save(rec.path)  # and the next save publishes cleanly
    assert (path / "config.json").exists() and not previous_copy(path).exists()
