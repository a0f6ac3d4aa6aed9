"""Where a model version's files are read from, and where a changed version is written.

On SQLite the files stay where training saved them (the record's ``path``). On PostgreSQL the
store keeps them too (:meth:`~persona_engine.store.StoreBase.put_model_files`), so any replica
can load any version: a process writes the stored files into its user directory, under
``models/.store/<model id>-<digest>``, the first time it loads the version (the digest changes
when the files are rewritten, e.g. after a user's deletion, and the old copy is removed). A
version fitted on LoRA-adapted features keeps its adapter there too (sub-folder ``adapter``), so
a replica that did not train it loads the same adapted encoder.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from .backends.base import RewardBackend
from .schemas import ModelRecord
from .store import StoreBase

#: the sub-folder of a version's stored files that holds its encoder's LoRA adapter
ADAPTER = "adapter"


def keep_adapter(store: StoreBase, model_dir: Path, adapter: str | None) -> None:
    """Where the store keeps model files, copy the encoder's adapter folder into the version's
    files (``model_dir/adapter``) before they are stored."""
    if store.keeps_model_files and adapter:
        shutil.copytree(Path(adapter).expanduser(), Path(model_dir) / ADAPTER, dirs_exist_ok=True)


def stored_adapter(store: StoreBase, rec: ModelRecord, home: Path) -> Path | None:
    """This machine's copy of the adapter stored with ``rec`` (None where there is none)."""
    if not store.keeps_model_files:
        return None
    folder = local_model_dir(store, rec, home) / ADAPTER
    return folder if folder.is_dir() else None


def _cache(home: Path) -> Path:
    return home / "models" / ".store"


def _safe(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", model_id)


def local_model_dir(store: StoreBase, rec: ModelRecord, home: Path) -> Path:
    """A directory on this machine holding ``rec``'s files (written from the store if needed)."""
    if not store.keeps_model_files:
        return Path(rec.path)
    with store.read_snapshot():  # the digest and the files it names come from one state
        digest = store.model_files_digest(rec.id)
        if digest is None:  # registered before the store kept files: where training saved them
            return Path(rec.path)
        name = _safe(rec.id)
        target = _cache(home) / f"{name}-{digest[:16]}"
        if (target / "config.json").exists():
            return target
        store.write_model_files(rec.id, target)
    for old in _cache(home).iterdir():  # earlier copies of this version
        if old != target and re.fullmatch(re.escape(name) + r"-[0-9a-f]{16}", old.name):
            shutil.rmtree(old, ignore_errors=True)
    return target


def resave_model(store: StoreBase, rec: ModelRecord, backend: RewardBackend, home: Path) -> None:
    """Write a changed ``backend`` as version ``rec``'s files: on disk at ``rec.path``, and in the
    store (then into this process's copy) where it keeps model files."""
    if not store.keeps_model_files:
        backend.save(rec.path)
        return
    if Path(rec.path).exists():  # this machine trained it: its copy changes too
        backend.save(rec.path)
    _cache(home).mkdir(parents=True, exist_ok=True)
    adapter = stored_adapter(store, rec, home)
    with tempfile.TemporaryDirectory(prefix=".resave-", dir=_cache(home)) as tmp:
        files = backend.save(Path(tmp) / "model")
        keep_adapter(store, files, None if adapter is None else str(adapter))
        store.put_model_files(rec.id, files)
    local_model_dir(store, rec, home)
