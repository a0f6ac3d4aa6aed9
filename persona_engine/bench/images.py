"""``persona bench images``: personalized image generation (PPD) on the synthetic shapes task.

1. Train the default PPD model in code (:mod:`persona_engine_ppd.recipe`): the tiny-image
   encoder, the base UNet (denoising loss), then the user adapter with user-conditioned
   Diffusion-DPO across many simulated training users.
2. Two splits of held-out users label 4 pairs of fresh images each: ``like_training`` (random
   preference directions outside the held-out octant, as the training users were drawn, in
   opposite pairs ``w``/``-w``) and ``held_out_region`` (directions inside the octant no training
   user occupies: generalization to unseen tastes). They are onboarded through an
   :class:`~persona_engine.engine.Engine` (image files, the store's feature cache, a stored
   profile per user).
3. Sample every user with the same initial noises as the unconditioned base model and judge each
   personalized image against the base image of the same noise by the user's gold reward (win
   rate), measure how far the gold features move toward each user's preference, how far opposite
   users move apart, and what the picture grids show.

Every number is stamped with the image encoder that produced it (``tiny-image``: self-supervised,
the default; ``tiny-image-supervised``: an oracle read-out of the gold attributes, for comparison),
a linear probe of how much of the gold features that encoder's embedding holds, and the space user
embeddings live in (``adapter.user_space``: the whole embedding, or the population's subspace with
its rank and the gold-free figures that chose it).

Several seeds run in turn; each seed's figures are kept (``images_seed{N}.json``), and
``images.json`` summarises them: the mean over seeds with a 95% t-interval, every seed, the worst
seed; never the best alone. Pictures (first seed): ``images_grid.png`` (base vs personalized for
showcase users) and ``images_interpolation.png`` (between two users).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError

#: Sizes of each preset. "cpu" fits a shared 2-core machine; "gpu" is the larger run for a CUDA device.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "recipe": {
            "pool_size": 8000,
            "train_users": 300,
            "pairs_per_user": 24,
            "model": {
                "tiny": {"image_size": 16, "block_out_channels": [16, 32]},
                "adapter": {"user_space": "population"},
            },
            "encoder_training": {"steps": 300, "batch_size": 128, "lr": 2e-3, "warmup_steps": 10},
            "pretrain": {"steps": 600, "batch_size": 64, "lr": 3e-3, "warmup_steps": 20},
            "dpo": {
                "steps": 300,
                "batch_size": 32,
                "lr": 1e-2,
                "warmup_steps": 20,
                "lr_schedule": "cosine",
                "timestep_range": [0.5, 1.0],
            },
        },
        "test_users": 16,
        "samples_per_user": 16,
        "sampling_steps": 20,
    },
    "gpu": {
        "recipe": {
            "pool_size": 50000,
            "train_users": 2000,
            "pairs_per_user": 32,
            "model": {
                "tiny": {
                    "image_size": 32,
                    "block_out_channels": [64, 128],
                    "cross_attention_dim": 64,
                    "attention_head_dim": 16,
                },
                "adapter": {"user_space": "population"},
            },
            "encoder_training": {"steps": 2000, "batch_size": 256, "lr": 2e-3, "warmup_steps": 50},
            "pretrain": {"steps": 8000, "batch_size": 256, "lr": 1e-3, "warmup_steps": 200},
            "dpo": {
                "steps": 3000,
                "batch_size": 128,
                "lr": 3e-3,
                "warmup_steps": 100,
                "lr_schedule": "cosine",
                "timestep_range": [0.5, 1.0],
            },
        },
        "test_users": 64,
        "samples_per_user": 32,
        "sampling_steps": 50,
    },
}
SHOWCASE = {  # named held-out users for the picture grid (weights over redness, brightness, x)
    "likes red": [1.0, 0.0, 0.0],
    "likes dark": [0.0, -1.0, 0.0],
    "likes left": [0.0, 0.0, -1.0],
    "likes bright, right": [0.0, 0.7071, 0.7071],
}
INTERPOLATE = ("red, left", [0.7071, 0.0, -0.7071], "not red, right", [-0.7071, 0.0, 0.7071])
SHOTS = 4


def _deep_update(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = (
            _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def _bootstrap(values: np.ndarray, seed: int, n_boot: int = 2000) -> list[float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), (n_boot, len(values)))
    return [float(x) for x in np.percentile(values[idx].mean(axis=1), [2.5, 97.5])]


def _valid_shape_rate(images: np.ndarray) -> float:
    """Share of images that show one shape of plausible size (2-45% of the pixels inked)."""
    ink = (images.max(axis=1) > 0.2).mean(axis=(1, 2))
    return float(((ink > 0.02) & (ink < 0.45)).mean())


def _onboard(
    engine: Any,
    gen: Any,
    users: list[Any],
    pool: Any,
    z: np.ndarray,
    shots: int,
    rng: np.random.Generator,
    tau: float,
    image_dir: Path,
) -> dict[str, np.ndarray]:
    """Write each user's ``shots`` labelled pairs as PNG files and onboard them through the engine."""
    from persona_engine_ppd.synthetic import label_pairs
    from PIL import Image

    pairs = label_pairs(pool, z, users, shots, rng=rng, tau=tau)
    image_dir.mkdir(parents=True, exist_ok=True)

    def png(i: int) -> str:
        path = image_dir / f"pool{i}.png"
        if not path.exists():
            Image.fromarray(
                (pool.images[i].transpose(1, 2, 0) * 255).round().astype(np.uint8)
            ).save(path)
        return str(path)

    vectors = {}
    for u, user in enumerate(users):
        rows = pairs.user_rows[u]
        comps = [
            {
                "prompt": pool.prompts[pairs.chosen[r]],
                "chosen": png(int(pairs.chosen[r])),
                "rejected": png(int(pairs.rejected[r])),
            }
            for r in rows
        ]
        vectors[user.id] = np.asarray(gen.onboard(engine, user.id, comps).vector, dtype=np.float32)
    return vectors


def _user_metrics(rewards: np.ndarray, base_rewards: np.ndarray) -> dict[str, float]:
    wins = (rewards > base_rewards).astype(float) + 0.5 * (rewards == base_rewards)
    return {
        "win_rate": float(wins.mean()),
        "reward_gain": float(rewards.mean() - base_rewards.mean()),
    }


def _split_metrics(
    users: list[Any], imgs: np.ndarray, zb: np.ndarray, scale: Any, seed: int
) -> dict[str, Any]:
    """Win rate over the base (with a bootstrap CI over users) and reward gain of users who come
    without an opposite partner (the held-out region)."""
    per_user = [_user_metrics(u.reward(scale(imgs[i])), u.reward(zb)) for i, u in enumerate(users)]
    wins = np.array([m["win_rate"] for m in per_user])
    gains = np.array([m["reward_gain"] for m in per_user])
    return {
        "win_rate_vs_base": float(wins.mean()),
        "win_rate_vs_base_ci95": _bootstrap(wins, seed),
        "users_moved_toward_preference": float((gains > 0).mean()),
        "reward_gain_vs_base": float(gains.mean()),
        "valid_shape_rate": _valid_shape_rate(imgs.reshape(-1, *imgs.shape[2:])),
    }


def encoder_probe(run: Any, seed: int) -> list[float]:
    """R^2 of a linear read-out of each gold feature from the encoder's embedding (fitted on the
    training pool, measured on fresh images): what the encoder knows, measured after training."""
    from persona_engine_ppd.recipe import embed_with
    from persona_engine_ppd.synthetic import linear_probe_r2, render_shapes

    size, dim = run.model.backbone.image_size, run.model.user_dim
    fresh = render_shapes(1000, size=size, rng=np.random.default_rng(seed + 202))
    n = min(len(run.task.pool), 4000)
    r2 = linear_probe_r2(
        run.features[:n],
        run.task.z[:n],
        embed_with(run.encoder_state, fresh.images, size, dim),
        run.task.scale(fresh.images),
    )
    return [round(float(x), 3) for x in r2]


def evaluate(
    run: Any,
    engine: Any,
    gen: Any,
    *,
    test_users: int,
    samples: int,
    steps: int,
    guidance_scales: list[float],
    seed: int,
    image_dir: Path,
) -> dict[str, Any]:
    """The held-out-user measurements (see the module docstring)."""
    import torch
    from persona_engine_ppd.sampling import initial_noise, sample_images
    from persona_engine_ppd.synthetic import SHAPES, SimulatedUser, render_shapes, simulate_users
    from persona_engine_ppd.users import pool_pairs

    model, task = run.model, run.task
    rng = np.random.default_rng(seed + 101)
    octant = run.metrics.get("held_out_octant")
    users = simulate_users(
        test_users, rng=rng, prefix="heldout", opposite_pairs=True, exclude_octant=octant
    )
    region = (
        simulate_users(test_users, rng=rng, prefix="region", within_octant=octant)
        if octant is not None
        else []
    )
    showcase = [
        SimulatedUser(name, np.asarray(w, dtype=np.float32)) for name, w in SHOWCASE.items()
    ]
    interp = [
        SimulatedUser(INTERPOLATE[0], np.asarray(INTERPOLATE[1], np.float32)),
        SimulatedUser(INTERPOLATE[2], np.asarray(INTERPOLATE[3], np.float32)),
    ]
    pool = render_shapes(
        4000, size=model.backbone.image_size, rng=rng
    )  # images no training user compared
    z = task.scale(pool.images)
    tau = run.metrics.get("label_tau", 4.0)
    t0 = time.perf_counter()
    vectors = _onboard(
        engine, gen, users + region + showcase + interp, pool, z, SHOTS, rng, tau, image_dir
    )
    onboard_ms = (time.perf_counter() - t0) * 1000 / len(vectors)

    # the ceiling of the embedding: each held-out user pooled from 64 pairs instead of 4
    from persona_engine_ppd.recipe import embed_with
    from persona_engine_ppd.synthetic import label_pairs

    # (inside the model's population user space when it has one, as onboarding embeds users)
    many = label_pairs(pool, z, users, 64, rng=rng, tau=tau)
    feats = embed_with(run.encoder_state, pool.images, model.backbone.image_size, model.user_dim)
    many_plain = {
        u.id: pool_pairs(
            feats[many.chosen[many.user_rows[i]]], feats[many.rejected[many.user_rows[i]]]
        )
        for i, u in enumerate(users)
    }
    many_vectors = {
        u.id: pool_pairs(
            feats[many.chosen[many.user_rows[i]]],
            feats[many.rejected[many.user_rows[i]]],
            space=model.user_space,
        )
        for i, u in enumerate(users)
    }
    # how close each 4-pair embedding comes to the same user's plain 64-pair one (labels only)
    agreement_4_vs_64 = float(np.mean([vectors[u.id] @ many_plain[u.id] for u in users]))

    prompts = [SHAPES[i % len(SHAPES)] for i in range(samples)]
    noise = initial_noise(model, samples, seed + 7)
    torch.manual_seed(seed)

    def draw(
        vecs: list[np.ndarray] | None,
        g: float,
        noise_: torch.Tensor = noise,
        prompts_: list[str] = prompts,
    ) -> np.ndarray:
        k = len(prompts_)
        if vecs is None:
            return sample_images(model, prompts_, None, steps=steps, noise=noise_).numpy()
        users_ = np.concatenate([np.repeat(v[None], k, axis=0) for v in vecs])
        out = sample_images(
            model,
            prompts_ * len(vecs),
            users_,
            steps=steps,
            guidance_scale=g,
            noise=noise_.repeat(len(vecs), 1, 1, 1),
        )
        return out.numpy().reshape(len(vecs), k, *out.shape[1:])

    t0 = time.perf_counter()
    base = draw(None, 1.0)
    null = draw([np.zeros(model.user_dim, np.float32)], 1.0)[0]
    zb, zn = task.scale(base), task.scale(null)
    conditions: dict[str, np.ndarray] = {
        f"ppd_g{g:g}": draw([vectors[u.id] for u in users], g) for g in guidance_scales
    }
    g_main = max(guidance_scales)
    conditions[f"ppd_64pairs_g{g_main:g}"] = draw([many_vectors[u.id] for u in users], g_main)
    region_results = {
        f"ppd_g{g:g}": _split_metrics(
            region, draw([vectors[u.id] for u in region], g), zb, task.scale, seed
        )
        for g in guidance_scales
        if region
    }
    sample_seconds = time.perf_counter() - t0

    results: dict[str, Any] = {}
    for name, imgs in conditions.items():
        zs = [task.scale(imgs[i]) for i in range(len(users))]
        per_user = [_user_metrics(u.reward(zs[i]), u.reward(zb)) for i, u in enumerate(users)]
        vs_null = [_user_metrics(u.reward(zs[i]), u.reward(zn)) for i, u in enumerate(users)]
        wins = np.array([m["win_rate"] for m in per_user])
        gains = np.array([m["reward_gain"] for m in per_user])
        seps, dists = [], []
        for i in range(0, len(users), 2):  # users 2k and 2k+1 are opposite
            a = users[i]
            seps.append(float(a.reward(zs[i]).mean() - a.reward(zs[i + 1]).mean()))
            dists.append(float(np.linalg.norm(zs[i].mean(axis=0) - zs[i + 1].mean(axis=0))))
        feature_shift = np.mean(
            [u.weights * (zs[i].mean(axis=0) - zb.mean(axis=0)) for i, u in enumerate(users)],
            axis=0,
        )
        results[name] = {
            "win_rate_vs_base": float(wins.mean()),
            "win_rate_vs_base_ci95": _bootstrap(wins, seed),
            "win_rate_vs_null_user": float(np.mean([m["win_rate"] for m in vs_null])),
            "users_moved_toward_preference": float((gains > 0).mean()),
            "reward_gain_vs_base": float(gains.mean()),
            "feature_shift_along_preference": {
                n: float(v) for n, v in zip(("redness", "brightness", "x_position"), feature_shift)
            },
            "opposite_pairs_separated": float(np.mean(np.array(seps) > 0)),
            "opposite_separation": float(np.mean(seps)),
            "opposite_feature_distance": float(np.mean(dists)),
            "valid_shape_rate": _valid_shape_rate(imgs.reshape(-1, *imgs.shape[2:])),
        }
    data_feats = task.scale(task.pool.images[:2000])
    quality = {
        "valid_shape_rate": {
            "data": _valid_shape_rate(task.pool.images[:2000]),
            "base": _valid_shape_rate(base),
            "null_user": _valid_shape_rate(null),
        },
        "feature_mean": {
            "data": data_feats.mean(axis=0).round(3).tolist(),
            "base": zb.mean(axis=0).round(3).tolist(),
        },
        "feature_std": {
            "data": data_feats.std(axis=0).round(3).tolist(),
            "base": zb.std(axis=0).round(3).tolist(),
        },
        "null_user_win_rate_vs_base": float(
            np.mean([_user_metrics(u.reward(zn), u.reward(zb))["win_rate"] for u in users])
        ),
    }

    # pictures: showcase users, and an interpolation between two users
    k = 8
    show = draw([vectors[u.id] for u in showcase], g_main, noise[:k], prompts[:k])
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    from persona_engine_ppd.sampling import interpolate_users

    mix = [interpolate_users(vectors[interp[0].id], vectors[interp[1].id], a) for a in alphas]
    inter = draw(mix, g_main, noise[:k], prompts[:k])
    r_a = [float(interp[0].reward(task.scale(inter[i])).mean()) for i in range(len(alphas))]
    return {
        "held_out_users": len(users),
        "shots": SHOTS,
        "samples_per_user": samples,
        "sampling_steps": steps,
        "guidance_scales": guidance_scales,
        "label_tau": tau,
        "onboard_ms_per_user": onboard_ms,
        "embedding_cosine_4_vs_64_pairs": agreement_4_vs_64,
        "sampling_seconds": sample_seconds,
        "conditions": results,
        "held_out_region": {
            "octant": octant,
            "users": len(region),
            "conditions": region_results,
        },
        "quality": quality,
        "interpolation": {
            "users": [interp[0].id, interp[1].id],
            "alphas": alphas,
            "reward_of_first_user": r_a,
            "monotone": bool(all(x >= y for x, y in zip(r_a, r_a[1:]))),
        },
        "_pictures": {
            "base": base[:k],
            "showcase": show,
            "showcase_names": [u.id for u in showcase],
            "interpolation": inter,
            "alphas": alphas,
        },
    }


def draw_grids(pictures: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """The two PNG grids (nearest-neighbour upscaled, labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def grid(rows: list[np.ndarray], labels: list[str], title: str, path: Path) -> None:
        cols = rows[0].shape[0]
        fig, axes = plt.subplots(
            len(rows), cols, figsize=(cols * 0.9 + 1.6, len(rows) * 0.95 + 0.4), squeeze=False
        )
        for r, (imgs, label) in enumerate(zip(rows, labels)):
            for c in range(cols):
                ax = axes[r][c]
                ax.imshow(np.clip(imgs[c].transpose(1, 2, 0), 0, 1), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "grid": out_dir / "images_grid.png",
        "interpolation": out_dir / "images_interpolation.png",
    }
    grid(
        [pictures["base"], *pictures["showcase"]],
        ["base model", *pictures["showcase_names"]],
        "Same noise per column: base model vs users onboarded from 4 pairs",
        paths["grid"],
    )
    grid(
        list(pictures["interpolation"]),
        [f"alpha={a:g}" for a in pictures["alphas"]],
        "(1 - alpha) u_red,left + alpha u_not-red,right",
        paths["interpolation"],
    )
    return {k: str(v) for k, v in paths.items()}


def run_seed(
    *,
    preset: str,
    seed: int,
    work: Path,
    overrides: dict[str, Any] | None,
    guidance_scales: tuple[float, ...],
    encoder_objective: str | None,
    device: str,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (or resume from ``work``) and evaluate one seed: (its figures, its pictures)."""
    from persona_engine_ppd import register_model
    from persona_engine_ppd.recipe import SyntheticRecipeConfig, train_synthetic

    from ..config import make_config
    from ..engine import Engine

    spec = PRESETS[preset]
    recipe = _deep_update(spec["recipe"], {"seed": seed})
    for stage in ("encoder_training", "pretrain", "dpo"):
        recipe[stage] = {**recipe[stage], "device": device, "seed": seed}
    recipe = _deep_update(recipe, (overrides or {}).get("recipe", {}))
    if encoder_objective is not None:
        recipe["encoder_objective"] = encoder_objective
    cfg = make_config(SyntheticRecipeConfig, recipe)
    started = time.perf_counter()
    run = train_synthetic(cfg, work / "model", work_dir=work / "checkpoints", progress=progress)
    run.metrics["label_tau"] = cfg.label_tau
    engine = Engine(work / "engine")
    record = register_model(engine, work / "model")
    gen = engine.generator("ppd", {"model": str(work / "model"), "device": device})
    extra = overrides or {}
    ev = evaluate(
        run,
        engine,
        gen,
        test_users=extra.get("test_users", spec["test_users"]),
        samples=extra.get("samples_per_user", spec["samples_per_user"]),
        steps=extra.get("sampling_steps", spec["sampling_steps"]),
        guidance_scales=list(guidance_scales),
        seed=seed,
        image_dir=work / "pairs",
    )
    # the public API as a caller uses it: a stored user, their profile, 4 images
    user = ev["interpolation"]["users"][0]
    t0 = time.perf_counter()
    api = engine.generate(user, "square", generator="ppd", config={"model": record.id}, n_images=4)
    api_seconds = time.perf_counter() - t0
    pictures = ev.pop("_pictures")
    m = run.metrics
    encoder = gen.load(work / "model")[2]["model"]
    result = {
        "benchmark": "images",
        "preset": preset,
        "seed": seed,
        "device": device,
        "encoder": {
            "name": m["encoder"],
            "objective": m["encoder_objective"],
            "id": engine.encoder(encoder["encoder"], encoder["encoder_config"]).id,
            "oracle": m["encoder"] == "tiny-image-supervised",
            "variance_covariance": m["encoder_variance_covariance"],
            "whiten": m["encoder_whiten"],
            "spectrum_as_trained": {k: round(v, 3) for k, v in m["encoder_spectrum"].items()},
            "probe_r2": dict(
                zip(("redness", "brightness", "x_position"), encoder_probe(run, seed))
            ),
        },
        "user_space": (
            {"kind": "encoder"} if run.model.user_space is None else run.model.user_space.info
        ),
        "sizes": {
            "image_size": cfg.model.tiny.image_size,
            "block_out_channels": cfg.model.tiny.block_out_channels,
            "unet_parameters": m["unet_parameters"],
            "adapter_parameters": m["adapter_parameters"],
            "pool_images": cfg.pool_size,
            "train_users": cfg.train_users,
            "train_pairs": m["train_pairs"],
            "held_out_octant": m["held_out_octant"],
            "encoder_steps": cfg.encoder_training.steps,
            "pretrain_steps": cfg.pretrain.steps,
            "pretrain_batch": cfg.pretrain.batch_size,
            "dpo_steps": cfg.dpo.steps,
            "dpo_batch_pairs": cfg.dpo.batch_size,
            "dpo_beta": m["dpo_beta"],
            "user_dropout": cfg.model.adapter.user_dropout,
        },
        "training": {
            "pretrain_loss": m["pretrain_loss"],
            "dpo_loss": m["dpo_loss"],
            "dpo_implicit_accuracy": m["dpo_implicit_accuracy"],
        },
        "seconds": {
            **{k: round(v, 1) for k, v in run.seconds.items()},
            "evaluation": round(ev["sampling_seconds"], 1),
            "engine_generate_user_4_images": round(api_seconds, 2),
            "total": round(time.perf_counter() - started, 1),
        },
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **{k: v for k, v in ev.items() if k != "sampling_seconds"},
        "api_check": {
            "user": user,
            "user_source": api.info["user_source"],
            "images": len(api.images),
            "size": list(api.images[0].size),
        },
    }
    return result, pictures


def _over_seeds(values: list[float]) -> dict[str, Any]:
    """Mean over seeds, its 95% t-interval, every seed, the worst."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    half = (
        float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
        if len(v) > 1
        else float("nan")
    )
    mean = float(v.mean())
    return {
        "mean": mean,
        "ci95": [mean - half, mean + half],
        "per_seed": [float(x) for x in v],
        "worst": float(v.min()),
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """``images.json``: every seed's main figures, and their mean with a CI (the headline)."""
    first = results[0]
    g_main = max(first["guidance_scales"])
    splits = {"like_training": "conditions", "held_out_region": "held_out_region"}
    summary: dict[str, Any] = {}
    for split, key in splits.items():
        per_cond: dict[str, Any] = {}
        conds = first[key] if key == "conditions" else first[key]["conditions"]
        for cond in conds:
            per_cond[cond] = {}
            for metric in ("win_rate_vs_base", "reward_gain_vs_base", "opposite_pairs_separated"):
                vals = [
                    (r[key] if key == "conditions" else r[key]["conditions"])[cond].get(metric)
                    for r in results
                ]
                if all(v is not None for v in vals):
                    per_cond[cond][metric] = _over_seeds(vals)
        summary[split] = per_cond
    headline = summary["like_training"][f"ppd_g{g_main:g}"]["win_rate_vs_base"]
    return {
        "benchmark": "images",
        "preset": first["preset"],
        "seeds": [r["seed"] for r in results],
        "encoder": {
            k: v
            for k, v in first["encoder"].items()
            if k not in ("probe_r2", "spectrum_as_trained")
        },
        "encoder_effective_rank": _over_seeds(
            [r["encoder"]["spectrum_as_trained"]["effective_rank"] for r in results]
        ),
        "encoder_probe_r2": _over_seeds(
            [float(np.mean(list(r["encoder"]["probe_r2"].values()))) for r in results]
        ),
        "headline": {
            "what": f"win rate over the base model by the gold reward, users drawn like the training users, 4 pairs each, guidance {g_main:g}; mean over seeds",
            **headline,
        },
        "summary": summary,
        "user_space": first["user_space"]["kind"],
        "user_space_rank": [r["user_space"].get("rank") for r in results],
        "embedding_cosine_4_vs_64_pairs": _over_seeds(
            [r["embedding_cosine_4_vs_64_pairs"] for r in results]
        ),
        "interpolation_monotone": [r["interpolation"]["monotone"] for r in results],
        "seconds_total": [r["seconds"]["total"] for r in results],
        "per_seed_files": [f"images_seed{r['seed']}.json" for r in results],
    }


def run_images_bench(
    *,
    preset: str = "cpu",
    seeds: tuple[int, ...] = (0,),
    out_dir: str | Path = "benchmarks/results",
    work_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    guidance_scales: tuple[float, ...] = (1.0, 3.0),
    encoder_objective: str | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Train (or resume from ``work_dir``) and evaluate every seed; write ``images_seed{N}.json``
    per seed, the summary ``images.json`` and the grids of the first seed. Returns the summary."""
    import json
    import tempfile

    try:
        import persona_engine_ppd  # noqa: F401
    except ImportError as e:  # pragma: no cover - the plugin ships with the package
        raise InvalidInputError(
            f"the images benchmark needs the ppd plugin and diffusers: {e}"
        ) from None
    if preset not in PRESETS:
        raise InvalidInputError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    if not seeds:
        raise InvalidInputError("the images benchmark needs at least one seed")
    work = (
        Path(work_dir)
        if work_dir is not None
        else Path(tempfile.mkdtemp(prefix="persona-bench-images-"))
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i, seed in enumerate(seeds):
        result, pictures = run_seed(
            preset=preset,
            seed=seed,
            work=work / f"seed{seed}",
            overrides=overrides,
            guidance_scales=guidance_scales,
            encoder_objective=encoder_objective,
            device=device,
            progress=progress,
        )
        if i == 0:
            result["pictures"] = draw_grids(pictures, out)
        (out / f"images_seed{seed}.json").write_text(json.dumps(result, indent=2))
        results.append(result)
    summary = summarise(results)
    summary["pictures"] = results[0]["pictures"]
    (out / "images.json").write_text(json.dumps(summary, indent=2))
    return summary


def markdown(summary: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of a summary: per split and condition, the mean over seeds with its
    CI and every seed."""
    enc = summary["encoder"]
    weights = enc.get("variance_covariance")
    vc = f", variance/covariance {weights[0]:g}/{weights[1]:g}" if weights else ""
    space = summary.get("user_space", "encoder")
    ranks = summary.get("user_space_rank", [])
    where = f"; users in the population's space (rank {ranks})" if space == "population" else ""
    lines = [
        f"encoder: {enc['name']} ({enc['objective']}{vc}{', whitened' if enc.get('whiten') else ''}{', ORACLE' if enc['oracle'] else ''}); seeds {summary['seeds']}{where}",
        "",
        "| split | condition | win rate vs base: mean (95% CI over seeds) | per seed | worst | reward gain (std units) |",
        "|---|---|---|---|---|---|",
    ]
    for split, conds in summary["summary"].items():
        for name, r in conds.items():
            w, g = r["win_rate_vs_base"], r["reward_gain_vs_base"]
            lo, hi = w["ci95"]
            seeds = " / ".join(f"{x:.3f}" for x in w["per_seed"])
            lines.append(
                f"| {split} | {name} | {w['mean']:.3f} ({lo:.3f}-{hi:.3f}) | {seeds} | {w['worst']:.3f} | {g['mean']:+.2f} |"
            )
    return "\n".join(lines)
