"""LoRA fine-tuning of the ``hf`` encoder's backbone on a tiny Llama built in code: the loss goes
down (population and per-user heads), onboarding leaves the adapter untouched, the saved adapter
gives back the features of the model trained in memory, the training device is honoured, and bad
options are clear errors."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hf_tiny_models import save_tiny_model
from persona_engine_encoders import HFEncoder

from persona_engine import Engine
from persona_engine.cli import cli
from persona_engine.config import TrainingConfig
from persona_engine.errors import InvalidInputError
from persona_engine.schemas import Comparison
from persona_engine.training import fit_module

COLOURS = ["red", "blue", "green"]
FAST = {"epochs": 8, "lr": 1e-2, "head_lr": 1e-2, "device": "cpu", "r": 4, "batch_size": 8}


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-causal")


def prompt_task(users=("u1", "u2")) -> list[Comparison]:
    """The preferred response depends on the prompt: the colour the prompt names."""
    return [
        Comparison(user_id=u, prompt=f"i like {a}", chosen=f"it is {a}", rejected=f"it is {b}")
        for u in users
        for a, b in itertools.permutations(COLOURS, 2)
    ]


def taste_task() -> list[Comparison]:
    """The preferred response depends on the user: u1 likes red, u2 likes blue, same prompts."""
    prompts = ["what is the best colour", "tell me about colour", "what colour please"]
    return [
        Comparison(user_id=u, prompt=p, chosen=c, rejected=r)
        for p in prompts
        for u, c, r in (("u1", "red", "blue"), ("u2", "blue", "red"))
    ] * 2


def loss_history(out_dir: Path) -> list[float]:
    return json.loads((out_dir / "finetune.json").read_text())["loss_history"]


def test_loss_goes_down_with_a_population_head(causal_dir, tmp_path):
    enc = HFEncoder({"model": str(causal_dir)})
    adapted = enc.finetune(prompt_task(), FAST, personalized=False, out_dir=tmp_path / "a")
    hist = loss_history(tmp_path / "a")
    # a head on the frozen backbone only gets to ~0.65 here: the drop is the adapter's
    assert hist[0] > 0.6 and hist[-1] < 0.3
    base = enc.encode_pairs(["i like red"], ["it is red"])
    assert not np.allclose(adapted.encode_pairs(["i like red"], ["it is red"]), base, atol=1e-4)


def test_per_user_heads_learn_opposite_tastes_a_shared_head_cannot(causal_dir, tmp_path):
    enc = HFEncoder({"model": str(causal_dir)})
    enc.finetune(taste_task(), FAST, personalized=True, out_dir=tmp_path / "users")
    enc.finetune(taste_task(), FAST, personalized=False, out_dir=tmp_path / "shared")
    assert loss_history(tmp_path / "users")[-1] < 0.3
    assert loss_history(tmp_path / "shared")[-1] > 0.6  # opposite labels: ln 2 at best
    info = json.loads((tmp_path / "users" / "finetune.json").read_text())
    assert info["user_heads"] is True and info["users"] == 2


@pytest.fixture(scope="module")
def trained(causal_dir, tmp_path_factory):
    """A personalized backend (lore) trained on fine-tuned features, through Engine.train."""
    home = tmp_path_factory.mktemp("home")
    engine = Engine(home, encoder="hf", encoder_config={"model": str(causal_dir)})
    engine.record(taste_task() + prompt_task())
    rec = engine.train("lore", {"rank": 2, "training": {"epochs": 30}}, finetune=FAST)
    return engine, rec, home


def _digest(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def _weights_digest(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode() + v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_onboarding_a_new_user_leaves_the_adapter_unchanged(trained):
    engine, rec, _ = trained
    adapter = Path(rec.data["encoder_config"]["adapter"])
    assert adapter.parent == Path(rec.path).parent and adapter.name == f"v{rec.version}-adapter"
    files, enc = _digest(adapter), engine.model_encoder(rec)
    weights = _weights_digest(enc.model)
    shots = [
        Comparison(user_id="new", prompt="what is the best colour", chosen="blue", rejected="red"),
        Comparison(user_id="new", prompt="what colour please", chosen="blue", rejected="red"),
        Comparison(user_id="new", prompt="tell me about colour", chosen="blue", rejected="green"),
    ]
    profile = engine.onboard("new", shots)
    assert profile.source == "onboarded" and profile.model_id == rec.id
    assert _digest(adapter) == files
    assert _weights_digest(engine.model_encoder(rec).model) == weights


def test_adapter_round_trip_gives_the_in_memory_features(trained, causal_dir):
    engine, rec, home = trained
    in_memory = engine.model_encoder(rec)
    rebuilt = Engine(home).model_encoder(rec)  # a fresh engine: base model + adapter from disk
    assert rebuilt is not in_memory and rebuilt.id == in_memory.id == rec.encoder
    assert "lora-" in rec.encoder
    prompts = ["what is the best colour", "i like green", "what is the best colour"]
    responses = ["red", "it is green", "blue because i like it"]
    got = rebuilt.encode_pairs(prompts, responses)
    np.testing.assert_allclose(got, in_memory.encode_pairs(prompts, responses), atol=1e-5)
    base = HFEncoder({"model": str(causal_dir)}).encode_pairs(prompts, responses)
    assert np.abs(got - base).max() > 1e-3  # the adapter was applied, not dropped
    scores = Engine(home).score("u1", "what is the best colour", ["red", "blue"], model=rec.id)
    assert len(scores) == 2


def test_training_device_is_honoured():
    module = torch.nn.Linear(3, 1)
    seen: list[str] = []

    def loss(rows, epoch):
        seen.append(module.weight.device.type)
        x = torch.ones(len(rows), 3, device=module.weight.device)
        return module(x).pow(2).mean()

    fit_module(module, loss, 4, TrainingConfig(epochs=1, device="cpu"))
    assert seen == ["cpu"]
    with pytest.raises(InvalidInputError, match="unknown training device"):
        fit_module(module, loss, 4, TrainingConfig(epochs=1, device="nonsense"))
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="no CUDA"):
            fit_module(module, loss, 4, TrainingConfig(epochs=1, device="cuda"))
        assert seen == ["cpu"]  # refused before any step, not run on the CPU instead


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_runs_on_the_gpu_and_the_module_comes_back(causal_dir, tmp_path):
    module = torch.nn.Linear(3, 1)
    seen: list[str] = []

    def loss(rows, epoch):
        seen.append(module.weight.device.type)
        return module(torch.ones(len(rows), 3, device=module.weight.device)).pow(2).mean()

    fit_module(module, loss, 4, TrainingConfig(epochs=2, device="cuda"))
    assert set(seen) == {"cuda"} and module.weight.device.type == "cpu"
    enc = HFEncoder({"model": str(causal_dir)})
    enc.finetune(prompt_task(), {**FAST, "device": "cuda"}, personalized=False, out_dir=tmp_path)
    info = json.loads((tmp_path / "finetune.json").read_text())
    assert info["device"].startswith("cuda") and info["loss_history"][-1] < 0.3


def test_bad_finetune_options_are_clear_errors(causal_dir, tmp_path):
    engine = Engine(tmp_path / "home", encoder="hf", encoder_config={"model": str(causal_dir)})
    engine.record(prompt_task(users=("u1",)))
    with pytest.raises(InvalidInputError, match="rank"):
        engine.train("bt", finetune={"rank": 8})
    with pytest.raises(InvalidInputError, match="nope_proj"):
        engine.train("bt", finetune={**FAST, "target_modules": ["nope_proj"]})
    with pytest.raises(InvalidInputError, match="no trainable backbone"):
        engine.train("bt", encoder="hashing", finetune={})
    with pytest.raises(InvalidInputError, match="missing adapter_model.safetensors"):
        _ = HFEncoder({"model": str(causal_dir), "adapter": str(tmp_path)}).id
    assert engine.store.models() == []
    result = CliRunner().invoke(
        cli,
        ["train", "--encoder", "hf", "--encoder-option", f"model={causal_dir}"]
        + ["--finetune", "r=2", "--finetune", "rnk=3"],
        env={"PERSONA_ENGINE_HOME": str(tmp_path / "home")},
    )
    assert result.exit_code != 0 and "rnk" in result.output


def test_a_replica_that_did_not_train_loads_the_adapter_from_postgres(
    causal_dir, tmp_path, postgres_url
):
    """On PostgreSQL the adapter travels with the version's files: another home (another
    replica) builds the same adapted encoder, also after the trainer's folder is gone and after a
    deletion rewrote the version's files."""
    import shutil

    trainer = Engine(
        tmp_path / "a",
        database=postgres_url,
        encoder="hf",
        encoder_config={"model": str(causal_dir)},
    )
    trainer.record(taste_task())
    rec = trainer.train("lore", {"rank": 2, "training": {"epochs": 5}}, finetune=FAST)
    prompts, responses = ["what is the best colour", "i like green"], ["red", "it is green"]
    want = trainer.model_encoder(rec).encode_pairs(prompts, responses)
    shutil.rmtree(rec.data["encoder_config"]["adapter"])  # not on this machine any more

    replica = Engine(tmp_path / "b", database=postgres_url)
    enc = replica.model_encoder(replica.model_record(rec.id))
    assert enc.id == rec.encoder and str(tmp_path / "b") in enc.config.adapter
    np.testing.assert_allclose(enc.encode_pairs(prompts, responses), want, atol=1e-5)

    trainer.delete_user("u2")  # rewrites the version's stored files
    late = Engine(tmp_path / "c", database=postgres_url)
    assert late.model_encoder(late.model_record(rec.id)).id == rec.encoder
