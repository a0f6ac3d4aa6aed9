"""Progress: tqdm bars on a terminal; in logs, one plain line per few seconds and 10%, then a
summary; PERSONA_ENGINE_PROGRESS forces either."""

from __future__ import annotations

import io

import pytest

from persona_engine.progress import LineProgress, progress_bar, use_bars


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_lines_come_at_most_every_interval_and_ten_percent_then_a_summary() -> None:
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(total=100, desc="encoding", unit="pair", stream=out, clock=clock)
    for _ in range(100):  # one item a second: the 5 s rule is the rarer one until 10% is
        clock.t += 1.0
        bar.update(1)
    bar.set_postfix({"loss": 0.25})
    bar.close()
    bar.close()  # closing twice writes one summary
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "encoding: 10/100 pair (10%), 10 s"  # 10% came after 5 s: 10% rules
    assert len(lines) == 11 and lines[-2].startswith("encoding: 100/100 pair (100%)")
    assert lines[-1] == "encoding: done, 100/100 pair (100%) in 100.0 s, 1.0 pair/s, loss=0.25"

    out, clock = io.StringIO(), Clock()
    fast = LineProgress(total=1000, desc="fit", unit="epoch", stream=out, clock=clock)
    for _ in range(1000):  # 64 items a second: now the 5 s rule is the rarer one
        clock.t += 1 / 64
        fast.update(1)
    fast.close()
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        f"fit: {n}/1000 epoch ({n // 10}%), {t} s" for n, t in ((320, 5), (640, 10), (960, 15))
    ]
    assert len(lines) == 4 and lines[3].startswith("fit: done, 1000/1000")


def test_without_a_total_only_time_counts_and_disable_prints_nothing() -> None:
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(desc="ingesting", unit="line", stream=out, clock=clock)
    for _ in range(12):
        clock.t += 1.0
        bar.update(10)
    bar.close()
    assert out.getvalue().splitlines() == [
        "ingesting: 50 line, 5 s",
        "ingesting: 100 line, 10 s",
        "ingesting: done, 120 line in 12.0 s, 10.0 line/s",
    ]
    quiet = io.StringIO()
    off = LineProgress(total=3, disable=True, stream=quiet, clock=Clock())
    off.update(3)
    off.close()
    assert quiet.getvalue() == ""


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "env,tty,bars",
    [(None, True, True), (None, False, False), ("0", True, False), ("1", False, True)],
)
def test_bars_on_a_terminal_lines_elsewhere_and_the_variable_forces_either(
    monkeypatch: pytest.MonkeyPatch, env: str | None, tty: bool, bars: bool
) -> None:
    if env is None:
        monkeypatch.delenv("PERSONA_ENGINE_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("PERSONA_ENGINE_PROGRESS", env)
    stream = Tty() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    assert use_bars() is bars
    bar = progress_bar(total=4, desc="stage", unit="step")
    try:
        assert (type(bar).__name__ != "LineProgress") is bars
        bar.update(4)
        assert bar.n == 4
    finally:
        bar.close()
    if not bars:
        assert stream.getvalue().startswith("stage: done, 4/4 step (100%)")


def test_training_in_a_log_writes_plain_lines(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The real path: Engine.train with progress on, stderr not a terminal."""
    from persona_engine import Engine

    monkeypatch.delenv("PERSONA_ENGINE_PROGRESS", raising=False)
    engine = Engine(encoder="hashing", encoder_config={"dim": 16})
    engine.record(
        [
            {"user_id": f"u{u}", "prompt": "p", "chosen": f"good {i}", "rejected": f"bad {i}"}
            for u in range(3)
            for i in range(5)
        ]
    )
    engine.train("bt", {"training": {"epochs": 5}}, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and ": done, " in err
