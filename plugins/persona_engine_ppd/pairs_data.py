"""Real preference pairs on disk, streamed: JSON Lines in Pick-a-Pic's layout.

Each line is one comparison by one user: ``{"user_id", "prompt", "chosen", "rejected"}``, the last
two image paths (absolute, or relative to the file's folder). Pick-a-Pic v2 (Kirstain et al., 2023)
is the model: one caption, two images, the user who picked one.

- :func:`index_pairs` reads the file once, checks every line (valid JSON, the four fields, both
  image files present; an error names the line) and keeps only each line's byte offset and user,
  never an image.
- :class:`StreamingPairs` is a ``torch.utils.data.IterableDataset``: it walks the lines in a
  seeded order from any position (so a resumed run continues where it stopped), seeks to each
  line and loads its two images only then.
- :func:`pair_feature_differences` embeds each pair once with the image encoder,
  ``phi(chosen) - phi(rejected)``, into a float32 ``.npy`` memory map (reused when present): what a
  user's embedding is pooled from, without the images.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from persona_engine.errors import InvalidInputError

from .user_space import UserSpace

FIELDS = ("user_id", "prompt", "chosen", "rejected")


@dataclass
class PairIndex:
    """Where each line of a pairs file starts, and whose it is."""

    path: Path
    offsets: np.ndarray  # (n,) byte offset of each pair's line
    line_numbers: np.ndarray  # (n,) 1-based line numbers, for error messages
    users: list[str]  # distinct user ids
    user_of: np.ndarray  # (n,) index into users
    user_rows: dict[int, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets)


def _resolve(base: Path, p: str) -> str:
    path = Path(p)
    return str(path if path.is_absolute() else base / path)


def parse_line(raw: bytes, path: Path, lineno: int) -> dict[str, str]:
    """One line as a pair record with resolved image paths; a clear error names the line."""
    where = f"{path.name} line {lineno}"
    try:
        item = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(item, dict):
        raise InvalidInputError(f"{where}: expected an object with {list(FIELDS)}")
    missing = [k for k in FIELDS if not isinstance(item.get(k), str) or not item[k].strip()]
    if missing:
        raise InvalidInputError(f"{where}: missing or empty {missing} (each a non-empty string)")
    rec = {k: item[k] for k in FIELDS}
    for k in ("chosen", "rejected"):
        rec[k] = _resolve(path.parent, rec[k])
    return rec


def index_pairs(path: str | Path, *, check_images: bool = True) -> PairIndex:
    """Read and check every line of a pairs file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"no such pairs file: {path}")
    offsets, linenos, user_of = [], [], []
    users: dict[str, int] = {}
    with path.open("rb") as f:
        lineno, offset = 0, 0
        for raw in f:
            lineno += 1
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            rec = parse_line(raw, path, lineno)
            if check_images:
                for k in ("chosen", "rejected"):
                    if not Path(rec[k]).is_file():
                        raise InvalidInputError(
                            f"{path.name} line {lineno}: no such image file {rec[k]} ({k})"
                        )
            offsets.append(start)
            linenos.append(lineno)
            user_of.append(users.setdefault(rec["user_id"], len(users)))
    if not offsets:
        raise InvalidInputError(f"{path} holds no preference pairs")
    user_arr = np.asarray(user_of, dtype=np.int64)
    return PairIndex(
        path,
        np.asarray(offsets, dtype=np.int64),
        np.asarray(linenos, dtype=np.int64),
        list(users),
        user_arr,
        {u: np.nonzero(user_arr == u)[0] for u in range(len(users))},
    )


def read_pair(index: PairIndex, i: int, handle: Any) -> dict[str, str]:
    """The record of pair ``i``, read by seeking to its line in an open binary ``handle``."""
    handle.seek(int(index.offsets[i]))
    return parse_line(handle.readline(), index.path, int(index.line_numbers[i]))


def load_pair_images(rec: dict[str, str], size: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The two images of a record as (3, size, size) float32 in [0, 1], resized when needed."""
    from PIL import Image

    out = []
    for k in ("chosen", "rejected"):
        p = Path(rec[k])
        if not p.is_file():
            raise InvalidInputError(f"{where}: no such image file {p} ({k})")
        with Image.open(p) as im:
            rgb = im.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
            out.append(np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0)
    return out[0], out[1]


class StreamingPairs(torch.utils.data.IterableDataset):
    """Pairs of a :class:`PairIndex` in a seeded order (a new permutation every pass), from
    position ``start``; each item is ``{"index", "prompt", "chosen", "rejected"}`` with the images
    as (3, size, size) tensors in [0, 1], loaded when the item is reached."""

    def __init__(self, index: PairIndex, image_size: int, *, seed: int = 0, start: int = 0):
        super().__init__()
        self.index, self.image_size, self.seed, self.start = index, image_size, seed, start

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.index))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        n = len(self.index)
        position = self.start
        with self.index.path.open("rb") as handle:
            while True:
                epoch, k = divmod(position, n)
                i = int(self.order(epoch)[k])
                rec = read_pair(self.index, i, handle)
                where = f"{self.index.path.name} line {int(self.index.line_numbers[i])}"
                chosen, rejected = load_pair_images(rec, self.image_size, where)
                yield {
                    "index": i,
                    "prompt": rec["prompt"],
                    "chosen": torch.from_numpy(chosen),
                    "rejected": torch.from_numpy(rejected),
                }
                position += 1


def pair_feature_differences(
    index: PairIndex, encoder: Any, out_file: str | Path, *, batch: int = 64
) -> np.ndarray:
    """``phi(chosen) - phi(rejected)`` of every pair (n, D) as a float32 memory map at
    ``out_file`` (reused when it already holds n rows of the encoder's width)."""
    out_file = Path(out_file)
    n, dim = len(index), int(encoder.dim)
    if out_file.is_file():
        existing = np.load(out_file, mmap_mode="r")
        if existing.shape == (n, dim):
            return existing
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_suffix(".partial.npy")
    diffs = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
    with index.path.open("rb") as handle:
        for lo in range(0, n, batch):
            recs = [read_pair(index, i, handle) for i in range(lo, min(lo + batch, n))]
            for r, i in zip(recs, range(lo, lo + len(recs))):
                for k in ("chosen", "rejected"):
                    if not Path(r[k]).is_file():
                        raise InvalidInputError(
                            f"{index.path.name} line {int(index.line_numbers[i])}: no such image file {r[k]} ({k})"
                        )
            feats = encoder.encode([r["chosen"] for r in recs] + [r["rejected"] for r in recs])
            diffs[lo : lo + len(recs)] = feats[: len(recs)] - feats[len(recs) :]
    diffs.flush()
    del diffs
    tmp.replace(out_file)
    return np.load(out_file, mmap_mode="r")


def pooled_user_embeddings(
    index: PairIndex,
    diffs: np.ndarray,
    rows: np.ndarray,
    shots: int,
    rng: np.random.Generator,
    *,
    normalize: bool,
    space: UserSpace | None = None,
) -> np.ndarray:
    """For each pair in ``rows``, its user's embedding pooled from ``shots`` *other* pairs of
    theirs (the mean feature difference, as :func:`.users.pool_pairs`; projected onto ``space``,
    when given)."""
    out = np.zeros((len(rows), diffs.shape[1]), dtype=np.float32)
    for j, r in enumerate(rows):
        own = index.user_rows[int(index.user_of[r])]
        others = own[own != r]
        if len(others) == 0:
            raise InvalidInputError(
                f"user {index.users[int(index.user_of[r])]!r} has one pair; PPD needs at least two per user"
            )
        pick = np.sort(others[rng.choice(len(others), min(shots, len(others)), replace=False)])
        u = np.asarray(diffs[pick], dtype=np.float32).mean(axis=0)
        if space is not None:
            u = space.project(u)
        if normalize:
            u = u / max(float(np.linalg.norm(u)), 1e-8)
        out[j] = u
    return out
