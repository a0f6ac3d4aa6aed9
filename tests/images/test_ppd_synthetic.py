"""The synthetic image task: gold features measure what they say, and users label by them."""

from __future__ import annotations

import numpy as np
import pytest
from persona_engine_ppd.synthetic import (
    FEATURES,
    FeatureScale,
    SimulatedUser,
    gold_features,
    label_pairs,
    render_shapes,
    simulate_users,
)


def _one(hue, value, cx, size=16):
    """A 16x16 image with one square of this hue/value centred at column cx."""
    img = np.zeros((1, 3, size, size), dtype=np.float32)
    from persona_engine_ppd.synthetic import _hsv_to_rgb

    rgb = _hsv_to_rgb(np.array([hue]), np.array([value]))[0]
    img[0, :, 6:10, cx - 2 : cx + 2] = rgb[:, None, None]
    return img


def test_gold_features_measure_colour_brightness_and_position():
    red, blue = gold_features(_one(0.0, 0.9, 8)), gold_features(_one(0.66, 0.9, 8))
    assert red[0, 0] > 0.9 and blue[0, 0] < -0.4
    bright, dark = gold_features(_one(0.3, 1.0, 8)), gold_features(_one(0.3, 0.4, 8))
    assert bright[0, 1] > dark[0, 1] + 0.5
    left, right = gold_features(_one(0.3, 0.8, 4)), gold_features(_one(0.3, 0.8, 12))
    assert left[0, 2] < -0.4 and right[0, 2] > 0.4
    assert abs(red[0, 2]) < 0.05  # centred


def test_rendered_images_cover_the_features():
    pool = render_shapes(500, rng=np.random.default_rng(0))
    assert (
        pool.images.shape == (500, 3, 16, 16) and pool.images.min() >= 0 and pool.images.max() <= 1
    )
    assert set(pool.prompts) == {"square", "circle"}
    assert pool.attributes.shape == (500, 7)
    assert np.allclose(
        pool.attributes[:, 0] ** 2 + pool.attributes[:, 1] ** 2, 1.0, atol=1e-5
    )  # hue on the circle
    assert np.array_equal(pool.attributes[:, 6], pool.shapes)
    z = FeatureScale.fit(pool.images)(pool.images)
    assert np.allclose(z.mean(axis=0), 0, atol=1e-4) and np.allclose(z.std(axis=0), 1, atol=1e-3)
    assert len(FEATURES) == z.shape[1] == 3


def test_users_label_pairs_by_their_reward():
    rng = np.random.default_rng(1)
    pool = render_shapes(400, rng=rng)
    z = FeatureScale.fit(pool.images)(pool.images)
    red_lover = SimulatedUser("r", np.array([1.0, 0.0, 0.0], dtype=np.float32))
    pairs = label_pairs(pool, z, [red_lover], 200, rng=rng, tau=20.0)
    assert len(pairs) == 200
    assert (pool.shapes[pairs.chosen] == pool.shapes[pairs.rejected]).all()  # same prompt
    assert (z[pairs.chosen, 0] > z[pairs.rejected, 0]).mean() > 0.9
    users = simulate_users(6, rng=rng, opposite_pairs=True)
    assert np.allclose(users[0].weights, -users[1].weights)
    assert all(np.linalg.norm(u.weights) == pytest.approx(1.0) for u in users)


def test_users_can_leave_an_octant_empty_or_fill_only_it():
    from persona_engine_ppd.synthetic import in_octant

    rng = np.random.default_rng(2)
    octant = (1, -1, 1)
    train = np.stack([u.weights for u in simulate_users(300, rng=rng, exclude_octant=octant)])
    assert not in_octant(train, octant).any()
    # the other seven octants stay covered (each holds about 1/7 of the users)
    signs = {tuple(s) for s in np.sign(train).astype(int)}
    assert len(signs) == 7
    held = simulate_users(20, rng=rng, within_octant=octant)
    assert in_octant(np.stack([u.weights for u in held]), octant).all()
    pairs = simulate_users(40, rng=rng, opposite_pairs=True, exclude_octant=octant)
    both = np.stack([u.weights for u in pairs])
    assert not in_octant(both, octant).any() and np.allclose(both[0], -both[1])
    with pytest.raises(ValueError, match="signs"):
        simulate_users(2, rng=rng, within_octant=(1, 0, 1))
