"""Model files are safetensors + JSON only: a pickle placed as a model is refused, never unpickled."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_support import Api

from persona_engine.backends.base import load_backend
from persona_engine.errors import PersonaEngineError

REPO = Path(__file__).resolve().parents[2]


class Detonator:
    """Unpickling this creates a directory: proof that something unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _pickled_model_dir(src: Path, dst: Path, marker: Path, name: str) -> Path:
    shutil.copytree(src, dst)
    (dst / "model.safetensors").unlink()
    (dst / name).write_bytes(pickle.dumps(Detonator(marker)))
    return dst


@pytest.mark.parametrize(
    "name", ["model.safetensors", "pytorch_model.bin", "model.pt", "model.pkl"]
)
def test_a_pickle_placed_as_a_model_is_refused(trained_api: Api, tmp_path: Path, name: str) -> None:
    rec = trained_api.engine.store.model("bt-v1")
    marker = tmp_path / "unpickled"
    bad = _pickled_model_dir(Path(rec.path), tmp_path / "bad", marker, name)
    with pytest.raises(PersonaEngineError) as err:
        load_backend(bad)
    assert not marker.exists()
    # a pickle named model.safetensors is a corrupt model (the server's fault, a 500); any other
    # name leaves no weights file at all: a clear "no model" (404)
    status, code = (500, "corrupt_model") if name == "model.safetensors" else (404, "no_model")
    assert (err.value.status, err.value.code) == (status, code)
    # the same through the service: the registry points at the pickle; scoring fails cleanly
    with trained_api.engine.store.transaction() as conn:
        conn.execute("UPDATE models SET path=? WHERE id='bt-v1'", (str(bad),))
    trained_api.engine._models.clear()
    client = TestClient(trained_api.client.app, raise_server_exceptions=False)
    r = client.post(
        "/v1/score",
        headers=trained_api.headers(),
        json={"user_id": "u0", "candidates": ["x"], "model": "bt-v1"},
    )
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert not marker.exists()
    assert json.loads((bad / "config.json").read_text())["backend"] == "bt"


def test_no_code_path_loads_pickles() -> None:
    """Static guard over the package and the built-in plugins."""
    pattern = re.compile(
        r"\bimport pickle\b|\bpickle\.loads?\(|\btorch\.load\(|allow_pickle\s*=\s*True|\bjoblib\.load\(|\bdill\b"
    )
    offenders = []
    for root in (REPO / "persona_engine", REPO / "plugins"):
        for path in root.rglob("*.py"):
            for i, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(text):
                    offenders.append(f"{path.relative_to(REPO)}:{i}: {text.strip()}")
    assert offenders == []
