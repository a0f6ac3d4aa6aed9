"""The population's user space (``adapter.user_space="population"``): the projection, the choice
of its rank, the basis saved with the model, training inside it and Engine onboarding into it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from persona_engine_ppd import register_model
from persona_engine_ppd.checkpoint import load_model, read_model_info, save_model
from persona_engine_ppd.config import DPOConfig
from persona_engine_ppd.image_net import TinyImageNet
from persona_engine_ppd.synthetic import render_shapes
from persona_engine_ppd.trainer import finetune_ppd
from persona_engine_ppd.user_space import BASIS_FILE, UserSpace, fit_user_space
from persona_engine_ppd.users import pool_pairs
from ppd_support import (
    USER_DIM,
    build_tiny,
    perturb_adapter,
    small_task,
    tiny_config,
    write_pairs_file,
    write_png,
)

from persona_engine.engine import Engine
from persona_engine.errors import InvalidInputError, NoModelError


def _basis(k: int = 2, dim: int = USER_DIM, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, k)))
    return np.ascontiguousarray(q.T, dtype=np.float32)


def _outside(basis: np.ndarray, seed: int = 1) -> np.ndarray:
    """A vector orthogonal to every row of ``basis``."""
    v = np.random.default_rng(seed).normal(size=basis.shape[1])
    return (v - basis.T @ (basis @ v)).astype(np.float32)


def test_the_projection_removes_what_lies_outside_the_basis():
    basis = _basis()
    space = UserSpace(basis)
    inside = basis.T @ np.array([0.6, -0.8], np.float32)
    v = inside + 3.0 * _outside(basis)
    assert np.allclose(space.project(v), inside, atol=1e-5)
    assert np.allclose(space.project(_outside(basis)), 0.0, atol=1e-5)
    assert np.allclose(space.project(-v), -space.project(v))  # opposite users stay opposite
    batch = np.stack([v, 2 * v])
    assert np.allclose(space.project(batch), np.stack([inside, 2 * inside]), atol=1e-5)
    # pooling projects the mean difference, then normalises
    chosen = np.stack([v, np.zeros(USER_DIM, np.float32)])
    rejected = np.zeros_like(chosen)
    u = pool_pairs(chosen, rejected, space=space)
    assert np.allclose(u, inside / np.linalg.norm(inside), atol=1e-5)
    assert not np.allclose(pool_pairs(chosen, rejected), u, atol=1e-2)


def test_a_width_mismatch_or_a_bad_basis_is_a_clear_error():
    space = UserSpace(_basis())
    with pytest.raises(InvalidInputError, match="width 4 cannot be projected.*width 6"):
        space.project(np.ones(4, np.float32))
    with pytest.raises(InvalidInputError, match="width 4"):
        pool_pairs(np.ones((2, 4)), np.zeros((2, 4)), space=space)
    with pytest.raises(InvalidInputError, match="orthonormal"):
        UserSpace(np.ones((2, USER_DIM), np.float32))
    with pytest.raises(InvalidInputError, match=r"\(k, D\)"):
        UserSpace(np.eye(3, 2, dtype=np.float32))


def _planted_pairs(rank: int, dim: int = 12, users: int = 200, pairs: int = 24, seed: int = 0):
    """Pair differences of users whose mean difference lies in a planted ``rank``-dim subspace,
    each pair noisy in every direction: (diffs, user_rows, planted basis)."""
    rng = np.random.default_rng(seed)
    planted = _basis(rank, dim, seed)
    weights = rng.normal(size=(users, rank))
    weights /= np.linalg.norm(weights, axis=1, keepdims=True)
    means = weights @ planted
    diffs = np.repeat(means, pairs, axis=0) + rng.normal(scale=1.5, size=(users * pairs, dim))
    rows = [np.arange(u * pairs, (u + 1) * pairs) for u in range(users)]
    return diffs.astype(np.float32), rows, planted


def test_the_rank_is_chosen_from_training_users_pairs_alone():
    diffs, rows, planted = _planted_pairs(rank=2)
    space = fit_user_space(diffs, rows, shots=4)
    assert space.rank == 2 and space.info["rank"] == 2
    # the fitted basis spans the planted subspace
    assert np.allclose(space.project(planted), planted, atol=0.1)
    info = space.info
    assert len(info["agreement_by_rank"]) == 12 and len(info["explained_by_rank"]) == 12
    assert info["agreement_chosen"] == max(info["agreement_by_rank"])
    assert info["agreement_chosen"] > info["agreement_unprojected"]
    # users spread over every direction: projecting would only lose signal
    rng = np.random.default_rng(3)
    means = rng.normal(size=(200, 12))
    spread = np.repeat(means, 24, axis=0) + rng.normal(scale=0.5, size=(200 * 24, 12))
    assert fit_user_space(spread.astype(np.float32), rows, shots=4).rank >= 10
    with pytest.raises(InvalidInputError, match="more than 4 pairs"):
        fit_user_space(diffs, [r[:4] for r in rows], shots=4)


def test_the_basis_round_trips_through_save_and_load(tmp_path):
    model = build_tiny(user_space="population")
    perturb_adapter(model)
    model.user_space = UserSpace(_basis(), {"kind": "population", "rank": 2})
    path = save_model(model, tiny_config(user_space="population"), tmp_path / "m")
    assert (path / BASIS_FILE).is_file()
    meta = json.loads((path / "ppd.json").read_text())
    assert meta["user_space"]["rank"] == 2 and meta["user_space"]["width"] == USER_DIM
    loaded, cfg, _ = load_model(path)
    assert cfg.adapter.user_space == "population"
    assert np.array_equal(loaded.user_space.basis, model.user_space.basis)
    assert loaded.user_space.info["rank"] == 2
    # the plain model keeps no basis
    plain = save_model(build_tiny(), tiny_config(), tmp_path / "plain")
    assert not (plain / BASIS_FILE).exists() and load_model(plain)[0].user_space is None


def test_a_model_without_its_basis_or_with_a_wrong_one_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no population user space"):
        save_model(
            build_tiny(user_space="population"),
            tiny_config(user_space="population"),
            tmp_path / "a",
        )
    model = build_tiny(user_space="population")
    model.user_space = UserSpace(_basis())
    path = save_model(model, tiny_config(user_space="population"), tmp_path / "b")
    from safetensors.torch import save_file

    save_file({"basis": torch.from_numpy(_basis(2, USER_DIM + 1))}, str(path / BASIS_FILE))
    with pytest.raises(NoModelError, match="shape \\(2, 7\\).*width 6"):
        load_model(path)
    (path / BASIS_FILE).unlink()
    with pytest.raises(NoModelError, match="has no user_space.safetensors"):
        load_model(path)


def test_training_fits_the_space_and_embeds_training_users_inside_it(tmp_path, monkeypatch):
    import persona_engine_ppd.trainer as trainer

    seen = []

    def recording(model, sched, chosen, rejected, prompts, users, **kw):
        seen.append(users.detach().numpy().copy())
        return original(model, sched, chosen, rejected, prompts, users, **kw)

    original = trainer.dpo_batch_loss
    monkeypatch.setattr(trainer, "dpo_batch_loss", recording)
    pool, pairs, features = small_task()
    model = build_tiny(user_space="population")
    cfg = DPOConfig(steps=2, batch_size=4, shots=2)
    finetune_ppd(model, pool.images, pool.prompts, features, pairs, cfg)
    space = model.user_space
    assert space is not None and space.width == USER_DIM and space.info["training_users"] == 2
    users = np.concatenate(seen)  # what the adapter was conditioned on, before dropout
    assert len(users) == 8 and np.allclose(space.project(users), users, atol=1e-5)
    assert np.allclose(np.linalg.norm(users, axis=1), 1.0, atol=1e-5)
    saved = save_model(model, tiny_config(user_space="population"), tmp_path / "trained")
    assert np.array_equal(load_model(saved)[0].user_space.basis, space.basis)
    # the plain pooling: no space fitted, embeddings in the whole encoder space
    seen.clear()
    plain = build_tiny()
    finetune_ppd(plain, pool.images, pool.prompts, features, pairs, cfg)
    assert plain.user_space is None
    assert not np.allclose(space.project(np.concatenate(seen)), np.concatenate(seen), atol=1e-3)


def test_engine_onboarding_embeds_a_new_user_inside_the_population_space(tmp_path):
    model = build_tiny(user_space="population")
    perturb_adapter(model)
    basis = _basis()
    model.user_space = UserSpace(basis)
    torch.manual_seed(0)
    encoder_state = TinyImageNet(8, USER_DIM).state_dict()
    path = save_model(
        model, tiny_config(user_space="population"), tmp_path / "m", encoder_state=encoder_state
    )
    engine = Engine(tmp_path / "home")
    register_model(engine, path)
    imgs = render_shapes(8, size=8, rng=np.random.default_rng(0)).images
    pairs = [
        {
            "prompt": "square",
            "chosen": write_png(tmp_path / f"{i}a.png", imgs[2 * i].transpose(1, 2, 0)),
            "rejected": write_png(tmp_path / f"{i}b.png", imgs[2 * i + 1].transpose(1, 2, 0)),
        }
        for i in range(4)
    ]
    prof = engine.generator("ppd").onboard(engine, "alice", pairs)
    meta = read_model_info(path)["model"]
    encoder = engine.encoder(meta["encoder"], meta["encoder_config"])
    feats = encoder.encode([p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])
    mean = (feats[:4] - feats[4:]).mean(axis=0)
    expected = basis.T @ (basis @ mean)
    expected /= np.linalg.norm(expected)
    vector = np.asarray(prof.vector, np.float32)
    assert np.allclose(vector, expected, atol=1e-4)
    assert np.allclose(basis.T @ (basis @ vector), vector, atol=1e-5)  # nothing outside the space
    plain = mean / np.linalg.norm(mean)
    assert np.linalg.norm(vector - plain) > 0.1  # not today's pooling
    # generation conditions on the stored, projected profile
    result = engine.generate("alice", "square", generator="ppd", n_images=1, steps=2)
    assert result.info["user_source"] == "onboarded"


def test_ppd_train_on_real_pairs_fits_the_space_when_asked(tmp_path, pipeline_dir):
    from click.testing import CliRunner

    from persona_engine.cli import cli

    pairs, lines = write_pairs_file(tmp_path)  # 2 users, 3 pairs each
    config = tmp_path / "dpo.json"
    args = ["ppd", "train", "--pairs", pairs, "--backbone", str(pipeline_dir), "--quiet"]
    args += ["--encoder", "tiny-image", "--encoder-config", json.dumps({"image_size": 8, "dim": 6})]
    args += ["--config", str(config), "--steps", "1", "--user-space", "population"]
    # 4 shots (the default) leave no pair to compare with: a clear error before any DPO step
    config.write_text(json.dumps({"batch_size": 2, "warmup_steps": 0}))
    res = CliRunner().invoke(cli, [*args, "--work", str(tmp_path / "w1")])
    assert res.exit_code != 0 and "more than 4 pairs" in res.output
    config.write_text(json.dumps({"batch_size": 2, "warmup_steps": 0, "shots": 2}))
    res = CliRunner().invoke(cli, [*args, "--work", str(tmp_path / "w2")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    engine = Engine()
    model, cfg, _ = engine.generator("ppd").load(engine.generator("ppd").resolve(engine)[1])
    assert cfg.adapter.user_space == "population" and model.user_space is not None
    prof = engine.generator("ppd").onboard(
        engine, "new", [{k: v for k, v in x.items() if k != "user_id"} for x in lines[:2]]
    )
    vector = np.asarray(prof.vector, np.float32)
    assert np.allclose(model.user_space.project(vector), vector, atol=1e-5)
