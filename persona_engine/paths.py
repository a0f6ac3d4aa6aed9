"""Where persona_engine keeps its data: one user directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV_HOME = "PERSONA_ENGINE_HOME"


def user_dir() -> Path:
    """The user directory: ``$PERSONA_ENGINE_HOME``, else the platform's app-data dir.

    Created on first use. The SQLite store, model files and caches live under it.
    """
    env = os.environ.get(ENV_HOME)
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("persona-engine", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_path() -> Path:
    return user_dir() / "persona.db"


def models_dir() -> Path:
    path = user_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    path = user_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def previous_copy(path: Path) -> Path:
    """Where :func:`writing_directory` moves the version of ``path`` it replaces."""
    return path.with_name(f".{path.name}.old")


@contextmanager
def writing_directory(path: Path) -> Iterator[Path]:
    """A temporary directory beside ``path`` to write a new version of it into.

    On a clean exit it replaces ``path`` in two renames (the old version moves to
    :func:`previous_copy`, the hidden ``.<name>.old``, then is removed), so a reader sees one whole
    version or the other; on an error it is removed and ``path`` is untouched. A save killed
    between the renames leaves the previous version intact in the hidden copy (readers may look
    there: :func:`persona_engine.backends.base.published_dir`), which the next save replaces;
    being hidden, it never matches a ``*/`` glob.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        old = previous_copy(path)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
