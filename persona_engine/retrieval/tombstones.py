"""Tombstones of a saved profile index: the users deleted since the index was written.

Deleting a user must not wait for the saved index (360 MB at 1M users) to be written again, so
:meth:`~persona_engine.retrieval.sync.ProfileIndexes.purge_user` removes the user's vector from
the index in memory at once and appends a tombstone to ``tombstones.jsonl`` in the index's
directory, one JSON object a line, fsynced before the delete returns::

    {"user_id": "u-42", "rowids": [1234], "seq": 98765, "at": 1718000000.0}

``rowids`` are the store rows the user's vector came from (empty when the index was not in
memory), ``seq`` the change-log head once the store had deleted the user, ``at`` a Unix time.
Loading a saved index applies its tombstones (the user is never returned). Saving an index, which
is what compaction is, writes the file again without the tombstones the new copy has seen
(``seq`` at or below the saved index's), so a saved index and its tombstones never disagree.

Privacy window: until the index is compacted, the old saved file still holds the deleted user's
id (slot table) and vector (faiss file), though no search returns them; the tombstone file holds
the id as well. After compaction neither file names the user or holds their vector.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

FILE = "tombstones.jsonl"


@dataclass(frozen=True)
class Tombstone:
    user_id: str
    rowids: tuple[int, ...] = ()
    seq: int = 0
    at: float = field(default_factory=time.time)


def append(directory: str | Path, stones: Sequence[Tombstone]) -> None:
    """Append ``stones`` to the directory's tombstone file and fsync it (and the directory, when
    the file is new) before returning."""
    path = Path(directory) / FILE
    new = not path.exists()
    lines = "".join(json.dumps({**asdict(t), "rowids": list(t.rowids)}) + "\n" for t in stones)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(lines)
        fh.flush()
        os.fsync(fh.fileno())
    if new:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read(directory: str | Path) -> list[Tombstone]:
    """The directory's tombstones, oldest first ([] without a file). A torn last line (an append
    cut short by a crash, whose delete never returned) is skipped: the change log removes that
    user's rows anyway."""
    path = Path(directory) / FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
            out.append(
                Tombstone(str(d["user_id"]), tuple(map(int, d["rowids"])), int(d["seq"]), d["at"])
            )
        except (ValueError, KeyError, TypeError):
            continue
    return out


def write_newer(src: str | Path, dst: str | Path, seq: int) -> int:
    """Write into ``dst`` the tombstones of ``src`` newer than ``seq`` (those an index saved at
    ``seq`` has not seen); returns how many."""
    kept = [t for t in read(src) if t.seq > seq]
    if kept:
        append(dst, kept)
    return len(kept)


def due(directory: str | Path, max_count: int, max_age_s: float) -> bool:
    """Whether the directory's tombstones call for a compaction: ``max_count`` or more of them,
    or the oldest older than ``max_age_s`` seconds."""
    stones = read(directory)
    return bool(stones) and (
        len(stones) >= max_count or time.time() - min(t.at for t in stones) >= max_age_s
    )
