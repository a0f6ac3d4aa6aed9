"""Progress of long stages: tqdm bars on a terminal, plain log lines elsewhere.

On a terminal a stage is a tqdm bar. In a log file or CI output a bar would be hundreds of
carriage-return updates on one line, so there a stage prints one plain line every ``interval``
seconds *and* 10% of its total (whichever is rarer), and a summary line when it ends.
``PERSONA_ENGINE_PROGRESS=1`` forces bars, ``PERSONA_ENGINE_PROGRESS=0`` forces plain lines.
``disable=True`` (the caller did not ask for progress) prints nothing either way.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

ENV = "PERSONA_ENGINE_PROGRESS"


def use_bars(stream: TextIO | None = None) -> bool:
    """Bars on a terminal, plain lines elsewhere, unless ``PERSONA_ENGINE_PROGRESS`` says."""
    forced = os.environ.get(ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(
    *, total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False, **kw: Any
) -> Any:
    """A tqdm bar or a :class:`LineProgress` (see the module docstring); both take ``update(n)``,
    ``set_postfix(**values)``, ``close()`` and expose the count as ``n``."""
    if disable or not use_bars():
        return LineProgress(
            total=total, desc=desc, unit=unit, disable=disable, initial=kw.get("initial", 0)
        )
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
        **kw,
    )


class LineProgress:
    """Plain progress lines for logs: at most one per ``interval`` seconds and 10% of ``total``
    (only the time rule without a total), and a summary line on :meth:`close`."""

    def __init__(
        self,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        disable: bool = False,
        initial: int = 0,
        interval: float = 5.0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.desc, self.unit, self.disable = total, desc or "progress", unit, disable
        self.n = self._last_n = initial
        self.interval, self.clock = interval, clock
        self.stream = stream
        self.postfix: dict[str, Any] = {}
        self.start = self._last_t = clock()
        self.closed = False

    def _write(self, text: str) -> None:
        if not self.disable:
            print(text, file=self.stream or sys.stderr, flush=True)

    def _counts(self) -> str:
        if self.total:
            return f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
        return f"{self.n} {self.unit}"

    def _extra(self) -> str:
        return "".join(f", {k}={v}" for k, v in self.postfix.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self._last_t < self.interval:
            return
        if self.total and (self.n - self._last_n) < 0.1 * self.total:
            return
        self._last_t, self._last_n = now, self.n
        self._write(f"{self.desc}: {self._counts()}, {now - self.start:.0f} s{self._extra()}")

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, **values: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **values}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        seconds = self.clock() - self.start
        rate = f", {self.n / seconds:.1f} {self.unit}/s" if seconds > 0 and self.n else ""
        self._write(f"{self.desc}: done, {self._counts()} in {seconds:.1f} s{rate}{self._extra()}")

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
