"""The ``ppd`` generator: personalized images from a user's few preference pairs.

``Engine.generate(user, prompt, generator="ppd", **options)`` samples the PPD model (Dang et al.,
CVPR 2025) conditioned on the user's embedding, the pooled embedding of their image pairs (stored
as their profile under the PPD model, see :mod:`.users`), with classifier-free guidance on the
user. Options are :class:`~persona_engine_ppd.config.SampleOptions`: ``n_images``, ``seed``,
``steps``, ``guidance_scale``, ``interpolate_with``/``alpha`` (mix with another user),
``user_vector``, ``personalized=False`` (the base model), ``output``.

PPD models are registered in the store's model registry as ``ppd-vN`` (not activated, so they
never replace the engine's active reward model); the generator uses ``config.model`` or the newest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from persona_engine.config import make_config
from persona_engine.errors import InvalidInputError, NoModelError, UnknownUserError
from persona_engine.generators import GenerationRequest, GenerationResult, Generator
from persona_engine.schemas import Comparison, ModelRecord, UserProfile

from .config import PPDGeneratorConfig, SampleOptions


def register_model(
    engine: Any, directory: str | Path, *, metrics: dict[str, Any] | None = None
) -> ModelRecord:
    """Add a saved PPD model directory to the engine's model registry as the next ``ppd-vN``."""
    from .checkpoint import read_model_info

    path = Path(directory).resolve()
    meta = read_model_info(path)
    encoder = _encoder(engine, meta)
    version = engine.store.next_model_version("ppd")
    record = ModelRecord(
        id=f"ppd-v{version}",
        backend="ppd",
        version=version,
        path=str(path),
        encoder=encoder.id,
        config=meta["model"],
        data={
            "encoder_name": meta["model"]["encoder"],
            "encoder_config": meta["model"]["encoder_config"],
        },
        metrics={
            k: v
            for k, v in {**meta.get("metrics", {}), **(metrics or {})}.items()
            if isinstance(v, (int, float, str, type(None)))
        },
    )
    return engine.store.add_model(record, activate=False)


def _encoder(engine: Any, meta: dict[str, Any]) -> Any:
    name, config = meta["model"]["encoder"], meta["model"].get("encoder_config", {})
    if engine is not None:
        return engine.encoder(name, config)
    from persona_engine.plugins import get_plugin_manager

    return get_plugin_manager().get("encoders", name)(config)


class PPDGenerator(Generator):
    """Personalized images from a PPD model (see the module docstring)."""

    name = "ppd"
    modality = "image"
    Config = PPDGeneratorConfig
    config: PPDGeneratorConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._models: dict[str, tuple[Any, Any, dict[str, Any]]] = {}
        self._lock = threading.RLock()

    # -- models ------------------------------------------------------------------------------
    def resolve(self, engine: Any) -> tuple[str | None, Path]:
        """(registry id or None, directory) of the model this generator samples."""
        ref = self.config.model
        if ref and Path(ref).is_dir():
            path = Path(ref).resolve()
            if engine is not None:
                for rec in engine.store.models("ppd"):
                    if Path(rec.path).resolve() == path:
                        return rec.id, path
            return None, path
        if engine is None:
            raise NoModelError(
                "the ppd generator needs an engine (its store) or config.model set to a PPD model directory"
            )
        if ref:
            rec = engine.store.model(ref)
            if rec.backend != "ppd":
                raise InvalidInputError(f"model {ref!r} is a {rec.backend} model, not a PPD model")
            return rec.id, Path(rec.path)
        recs = engine.store.models("ppd")
        if not recs:
            raise NoModelError(
                "no PPD model yet: train one (`persona ppd train-synthetic`, or `persona bench images`), or set config.model to a model directory"
            )
        return recs[-1].id, Path(recs[-1].path)

    def load(self, path: Path) -> tuple[Any, Any, dict[str, Any]]:
        from .checkpoint import load_model

        key = str(path)
        with self._lock:
            if key not in self._models:
                self._models[key] = load_model(
                    path, device=self.config.device, dtype=self.config.dtype
                )
            return self._models[key]

    # -- users -------------------------------------------------------------------------------
    def onboard(
        self,
        engine: Any,
        user_id: str,
        comparisons: Iterable[Comparison | dict[str, Any]] | None = None,
    ) -> UserProfile:
        """Record the user's image pairs (when given) and store their PPD profile (pooled inside
        the model's population user space when it has one, ``adapter.user_space="population"``)."""
        from .users import onboard_user

        model_id, path = self.resolve(engine)
        if model_id is None:
            raise NoModelError(
                f"the PPD model at {path} is not in this engine's registry; register it first (persona_engine_ppd.register_model)"
            )
        model, cfg, meta = self.load(path)
        return onboard_user(
            engine,
            model_id,
            _encoder(engine, meta),
            user_id,
            comparisons,
            normalize=cfg.adapter.normalize_user,
            space=model.user_space,  # the population's user space, when the model has one
        )

    def user_vector(self, engine: Any, user_id: str) -> tuple[np.ndarray, str]:
        """A user's embedding under the model, and where it came from (their stored profile, or
        onboarding from their stored image pairs)."""
        model_id, _ = self.resolve(engine)
        if model_id is not None:
            prof = engine.store.profile(user_id, model_id)
            if prof is not None:
                return np.asarray(prof.vector, dtype=np.float32), prof.source
        if (
            engine is not None
            and engine.store.has_user(user_id)
            and any(c.kind == "image" for c in engine.store.comparisons(user_id))
        ):
            return np.asarray(self.onboard(engine, user_id).vector, dtype=np.float32), "onboarded"
        raise UnknownUserError(
            f"user {user_id!r} has no PPD profile and no image preference pairs; onboard them with a few (prompt, preferred image, rejected image) pairs"
        )

    def similar_users(self, engine: Any, user_id: str, k: int = 10) -> list[Any]:
        """The ``k`` users whose PPD profiles are nearest to ``user_id``'s, through the engine's
        faiss profile index of the PPD model version (the same index text profiles use)."""
        model_id, path = self.resolve(engine)
        indexes = getattr(engine, "_indexes", None)
        if model_id is None or indexes is None:
            raise NoModelError(
                f"the PPD model at {path} is not registered in an engine with a profile index"
            )
        vector, _ = self.user_vector(engine, user_id)
        return indexes.get(model_id, len(vector)).search(vector, k, exclude=[user_id])[0]

    # -- generation --------------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> GenerationResult:
        from .sampling import interpolate_users, sample_images, to_uint8

        opts = make_config(SampleOptions, request.options)
        engine = request.engine
        model_id, path = self.resolve(engine)
        model, cfg, _ = self.load(path)
        n = opts.n_images or self.config.n_images
        users, source = self._condition(engine, request, opts, model.user_dim, model_id)
        if users is not None and opts.interpolate_with is not None:
            other, _ = self.user_vector(engine, opts.interpolate_with)
            users = interpolate_users(users, other, opts.alpha)
            source = f"{source}+interpolated"
        guidance = (
            self.config.guidance_scale if opts.guidance_scale is None else opts.guidance_scale
        )
        steps = opts.steps or self.config.steps
        seed = self.config.seed if opts.seed is None else opts.seed
        with self._lock:
            images = sample_images(
                model,
                [request.prompt] * n,
                None if users is None else np.repeat(users[None, :], n, axis=0),
                steps=steps,
                guidance_scale=guidance,
                text_guidance_scale=self.config.text_guidance_scale,
                seed=seed,
            )
        arrays = to_uint8(images)
        if opts.output == "pil":
            from PIL import Image

            out: list[Any] = [Image.fromarray(a) for a in arrays]
        else:
            out = list(arrays)
        info = {
            "model": model_id or str(path),
            "backbone": cfg.backbone,
            "user_source": source,
            "personalized": users is not None,
            "guidance_scale": guidance,
            "steps": steps,
            "seed": seed,
            "n_images": n,
            "image_size": int(arrays.shape[1]),
        }
        return GenerationResult(images=out, info=info)

    def _condition(
        self,
        engine: Any,
        request: GenerationRequest,
        opts: SampleOptions,
        dim: int,
        model_id: str | None,
    ) -> tuple[np.ndarray | None, str]:
        if not opts.personalized:
            return None, "base"
        if opts.user_vector is not None:
            vec = np.asarray(opts.user_vector, dtype=np.float32)
            if vec.shape != (dim,) or not np.isfinite(vec).all():
                raise InvalidInputError(
                    f"user_vector must be {dim} finite numbers, got shape {vec.shape}"
                )
            return vec, "given"
        if request.user_id is None:
            return np.zeros(dim, dtype=np.float32), "null"
        prof = request.profile
        if (
            prof is not None
            and model_id is not None
            and getattr(prof, "model_id", None) == model_id
        ):
            return np.asarray(prof.vector, dtype=np.float32), prof.source
        if engine is None:
            raise InvalidInputError("without an engine, pass the user's embedding as user_vector")
        return self.user_vector(engine, request.user_id)
