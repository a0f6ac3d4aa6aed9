"""The ppd generator through the Engine: onboarding from image pairs into the store, generating,
interpolating, guidance, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from persona_engine_ppd import register_model
from persona_engine_ppd.checkpoint import save_model
from persona_engine_ppd.image_net import TinyImageNet
from persona_engine_ppd.synthetic import render_shapes
from ppd_support import USER_DIM, build_tiny, perturb_adapter, tiny_config, write_png

from persona_engine.engine import Engine
from persona_engine.errors import InvalidInputError, NoModelError, UnknownUserError


def _save(tmp_path, *, trained: bool):
    model = build_tiny()
    if trained:
        perturb_adapter(model)
    torch.manual_seed(0)
    encoder_state = TinyImageNet(8, USER_DIM).state_dict()
    return save_model(
        model,
        tiny_config(),
        tmp_path / ("trained" if trained else "untrained"),
        encoder_state=encoder_state,
    )


@pytest.fixture
def engine(tmp_path):
    eng = Engine(tmp_path / "home")
    register_model(eng, _save(tmp_path, trained=True))
    return eng


def _pairs(tmp_path, user, n=4, size=8, seed=0):
    rng = np.random.default_rng(seed)
    imgs = render_shapes(2 * n, size=size, rng=rng).images
    out = []
    for i in range(n):
        a = write_png(tmp_path / f"{user}-{i}-a.png", imgs[2 * i].transpose(1, 2, 0))
        b = write_png(tmp_path / f"{user}-{i}-b.png", imgs[2 * i + 1].transpose(1, 2, 0))
        out.append({"prompt": "square", "chosen": a, "rejected": b})
    return out


def test_onboarding_stores_a_profile_and_generate_returns_images(engine, tmp_path):
    gen = engine.generator("ppd")
    prof = gen.onboard(engine, "alice", _pairs(tmp_path, "alice"))
    assert prof.model_id == "ppd-v1" and prof.backend == "ppd" and prof.n_comparisons == 4
    assert len(prof.vector) == USER_DIM and np.linalg.norm(prof.vector) == pytest.approx(
        1.0, abs=1e-5
    )
    assert engine.store.profile("alice", "ppd-v1") == prof
    assert engine.store.active_model() is None  # a PPD model never replaces the active reward model
    result = engine.generate("alice", "a square", generator="ppd", n_images=3, steps=2)
    assert len(result.images) == 3
    assert all(im.size == (8, 8) and im.mode == "RGB" for im in result.images)
    assert result.info["user_source"] == "onboarded" and result.info["model"] == "ppd-v1"
    arrays = engine.generate(
        "alice", "circle", generator="ppd", n_images=2, steps=2, output="array"
    ).images
    assert arrays[0].shape == (8, 8, 3) and arrays[0].dtype == np.uint8


def test_ppd_profiles_are_searchable_in_the_profile_index(engine, tmp_path):
    pytest.importorskip("faiss")
    gen = engine.generator("ppd")
    for i, user in enumerate(["u1", "u2", "u3"]):
        gen.onboard(engine, user, _pairs(tmp_path, user, seed=10 + i))
    gen.onboard(engine, "u1-twin", _pairs(tmp_path, "u1", seed=10))  # the same pairs as u1
    near = gen.similar_users(engine, "u1", k=2)
    assert near[0].user_id == "u1-twin" and near[0].distance == pytest.approx(
        min(n.distance for n in near)
    )
    assert "u1" not in [n.user_id for n in near]


def test_users_with_stored_image_pairs_are_onboarded_on_demand(engine, tmp_path):
    engine.record([{**p, "user_id": "bob", "kind": "image"} for p in _pairs(tmp_path, "bob")])
    result = engine.generate("bob", "square", generator="ppd", n_images=1, steps=2)
    assert result.info["user_source"] == "onboarded"
    assert engine.store.profile("bob", "ppd-v1") is not None


def test_untrained_adapter_generates_exactly_the_base_images(tmp_path):
    eng = Engine(tmp_path / "home")
    register_model(eng, _save(tmp_path, trained=False))
    vec = np.ones(USER_DIM) / np.sqrt(USER_DIM)
    a = eng.generate(
        None,
        "square",
        generator="ppd",
        n_images=2,
        steps=3,
        user_vector=vec.tolist(),
        output="array",
    ).images
    b = eng.generate(
        None, "square", generator="ppd", n_images=2, steps=3, personalized=False, output="array"
    ).images
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_users_guidance_and_interpolation_change_the_images(engine, tmp_path):
    gen = engine.generator("ppd")
    gen.onboard(engine, "a", _pairs(tmp_path, "a", seed=1))
    gen.onboard(engine, "b", _pairs(tmp_path, "b", seed=2))
    opts = {"n_images": 2, "steps": 3, "output": "array", "guidance_scale": 2.0}
    a = np.stack(engine.generate("a", "square", generator="ppd", **opts).images).astype(int)
    b = np.stack(engine.generate("b", "square", generator="ppd", **opts).images).astype(int)
    mid = np.stack(
        engine.generate(
            "a", "square", generator="ppd", interpolate_with="b", alpha=0.5, **opts
        ).images
    ).astype(int)
    at_b = np.stack(
        engine.generate(
            "a", "square", generator="ppd", interpolate_with="b", alpha=1.0, **opts
        ).images
    ).astype(int)
    assert not np.array_equal(a, b)
    assert np.array_equal(at_b, b)  # alpha = 1 is user b
    assert not np.array_equal(mid, a) and not np.array_equal(mid, b)
    g1 = np.stack(
        engine.generate("a", "square", generator="ppd", **{**opts, "guidance_scale": 1.0}).images
    ).astype(int)
    assert not np.array_equal(a, g1)


def test_clear_errors_for_bad_input(engine, tmp_path):
    gen = engine.generator("ppd")
    with pytest.raises(InvalidInputError, match="no comparisons"):
        gen.onboard(engine, "carol", [])
    with pytest.raises(InvalidInputError, match="no image preference pairs"):
        gen.onboard(engine, "carol")
    big = _pairs(tmp_path, "dave", n=1, size=16)
    with pytest.raises(InvalidInputError, match="16x16.*8x8"):
        gen.onboard(engine, "dave", big)
    with pytest.raises(InvalidInputError, match="no such image file"):
        gen.onboard(
            engine,
            "erin",
            [
                {
                    "prompt": "square",
                    "chosen": str(tmp_path / "nope.png"),
                    "rejected": str(tmp_path / "nope2.png"),
                }
            ],
        )
    with pytest.raises(UnknownUserError, match="no PPD profile"):
        engine.generate("nobody", "square", generator="ppd", n_images=1, steps=1)
    gen.onboard(engine, "frank", _pairs(tmp_path, "frank"))
    with pytest.raises(InvalidInputError, match="names nothing"):
        engine.generate("frank", "a triangle", generator="ppd", n_images=1, steps=1)
    with pytest.raises(InvalidInputError, match="not_an_option"):
        engine.generate("frank", "square", generator="ppd", not_an_option=1)
    with pytest.raises(InvalidInputError, match="user_vector"):
        engine.generate(None, "square", generator="ppd", user_vector=[1.0, 2.0])
    with pytest.raises(InvalidInputError):
        engine.generate("frank", "square", generator="ppd", n_images=0)


def test_no_ppd_model_is_a_clear_error(tmp_path):
    with pytest.raises(NoModelError, match="no PPD model"):
        Engine(tmp_path / "empty").generate(None, "square", generator="ppd")
    with pytest.raises(NoModelError, match="no PPD model at"):
        Engine(tmp_path / "empty2").generate(
            None, "square", generator="ppd", config={"model": str(tmp_path)}
        )
