"""Reading comparisons from JSON Lines files, in batches, idempotently."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import IngestError, InvalidInputError, PersonaEngineError
from .progress import progress_bar
from .schemas import Comparison, comparison_from_record
from .store import StoreBase
from .store.online import OnlineOutcomes


@dataclass
class IngestReport:
    read: int = 0
    added: int = 0
    duplicates: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.added} comparisons added, {self.duplicates} already stored, {self.read} lines read"
        if self.errors:
            text += f", {len(self.errors)} bad lines skipped (first: line {self.errors[0][0]}: {self.errors[0][1]})"
        return text


def iter_jsonl(
    path: Path, *, source: str = ""
) -> Iterator[tuple[int, Comparison | PersonaEngineError]]:
    """Yield (line number, Comparison or the error for that line); blank lines are skipped."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, InvalidInputError(f"not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                yield lineno, InvalidInputError(f"not valid JSON ({e.msg} at column {e.colno})")
                continue
            except RecursionError:
                yield lineno, InvalidInputError("JSON nested too deeply")
                continue
            try:
                yield lineno, comparison_from_record(record, source=source)
            except PersonaEngineError as e:
                yield lineno, e


def ingest_jsonl(
    store: StoreBase,
    path: str | Path,
    *,
    batch_size: int = 2000,
    skip_bad: bool = False,
    progress: bool = False,
    tenant: str = "",
    limit: int | None = None,
    evaluate: Callable[[list[Comparison]], OnlineOutcomes] | None = None,
) -> IngestReport:
    """Store the comparisons of a JSONL file.

    Re-ingesting a file adds nothing (comparisons are unique per user, prompt, chosen, rejected).
    A bad line raises :class:`IngestError` naming its line number after the good lines before it
    are stored (so nothing is lost and a fixed file can simply be ingested again); with
    ``skip_bad`` bad lines are reported in the result and the rest is stored. ``evaluate`` scores
    each batch before it is stored (online evaluation: :mod:`persona_engine.online`).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"no such file: {path}")
    report = IngestReport()
    batch: list[Comparison] = []
    bar = progress_bar(desc=f"ingesting {path.name}", unit="line", disable=not progress)

    def flush() -> None:
        if batch:
            outcomes = evaluate(batch) if evaluate is not None else None
            added, dup = store.add_comparisons(batch, tenant=tenant, outcomes=outcomes)
            report.added += added
            report.duplicates += dup
            batch.clear()

    for lineno, item in iter_jsonl(path, source=path.name):
        if limit is not None and report.read >= limit:
            break
        report.read += 1
        if isinstance(item, PersonaEngineError):
            if skip_bad:
                report.errors.append((lineno, item.message))
                continue
            flush()
            bar.close()
            raise IngestError(
                f"{path.name} line {lineno}: {item.message} ({report.added} comparisons before it were stored; fix the line and ingest again)",
                line=lineno,
                stored=report.added,
            )
        batch.append(item)
        if len(batch) >= batch_size:
            flush()
            bar.update(report.read - bar.n)
    flush()
    bar.update(report.read - bar.n)
    bar.close()
    return report
