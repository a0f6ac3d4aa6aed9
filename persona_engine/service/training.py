"""Background training with an atomic switch to the new model version.

``POST /v1/train`` starts :mod:`.train_worker` in a subprocess and returns at once. Scoring keeps
using the active version meanwhile (the registry says which one is active; nothing changes until
the switch). When the worker has registered the new version (inactive), this runner

1. loads it into the engine's model cache, so the first request after the switch does not pay for
   loading;
2. places users profiled under the version being replaced but not under the new one (they were
   onboarded while it trained) with ``Engine.onboard``, for personalized backends;
3. drops what the worker wrote about users deleted while it ran (their profiles under the new
   version, and the user row when no comparison of theirs remains);
4. flips the registry's ``active`` flag in one transaction on the single writer: every request
   sees either the old version or the new one.

One run at a time, across every replica on the store (a second is a 409): a run holds the
store's ``training`` lock (:meth:`~persona_engine.store.StoreBase.try_lock`: a PostgreSQL advisory
lock, a file lock beside a SQLite file) from its start to its switch, since versions are numbered
when a run registers its model. The worker opens the store from ``PERSONA_ENGINE_DATABASE`` in
its environment (a URL's password never appears on a command line).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..config import make_config
from ..engine import Engine
from ..errors import ConflictError, NotFoundError
from ..schemas import utcnow
from ..store.open import ENV_DATABASE
from .reads import StoreReader
from .writer import SingleWriter

log = logging.getLogger("persona_engine.service")
#: the store-wide lock a training run holds
TRAINING_LOCK = "training"


@dataclass
class TrainJob:
    id: str
    backend: str
    config: dict[str, Any]
    state: str = "running"
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    model_id: str | None = None
    error: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in ("id", "backend", "state", "started_at", "finished_at", "model_id", "error")
        }


class TrainingRunner:
    def __init__(
        self,
        engine: Engine,
        writer: SingleWriter,
        reader: StoreReader,
        *,
        timeout_s: float = 3600.0,
        keep: int = 20,
    ):
        self.engine = engine
        self.reader = reader
        self.writer = writer
        self.timeout_s = timeout_s
        self.keep = keep
        self.jobs: dict[str, TrainJob] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []
        self._deleted: set[str] = set()

    @property
    def running(self) -> TrainJob | None:
        return next((j for j in self.jobs.values() if j.state == "running"), None)

    def start(self, backend: str, config: dict[str, Any]) -> TrainJob:
        """Check the backend and its options here (404/422 at once), then train in the background."""
        cls = self.engine.plugins.get("backends", backend)
        make_config(cls.Config, config)  # type: ignore[attr-defined]
        with self._lock:
            running = self.running
            if running is not None:
                raise ConflictError(
                    f"training job {running.id} ({running.backend}) is still running; wait for it"
                )
            release = self.engine.store.try_lock(TRAINING_LOCK)
            if release is None:
                raise ConflictError(
                    "another replica of the service is training a model on this store; "
                    "one training job runs at a time: wait for it, then retry"
                )
            job = TrainJob(id=uuid.uuid4().hex[:12], backend=backend, config=dict(config))
            self.jobs[job.id] = job
            self._deleted.clear()
            for old in [j for j in self.jobs.values() if j.state != "running"][
                : max(0, len(self.jobs) - self.keep)
            ]:
                self.jobs.pop(old.id, None)
        thread = threading.Thread(
            target=self._run, args=(job, release), name=f"persona-train-{job.id}", daemon=True
        )
        self._threads.append(thread)
        thread.start()
        return job

    def job(self, job_id: str) -> TrainJob:
        if job_id not in self.jobs:
            raise NotFoundError(f"no training job {job_id!r}")
        return self.jobs[job_id]

    def note_deleted(self, stored_user_id: str) -> None:
        """A user was deleted: if a run is going, undo what it writes about them (see step 3)."""
        with self._lock:
            if self.running is not None:
                self._deleted.add(stored_user_id)

    def shutdown(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        for t in self._threads:
            t.join(timeout)

    # -- the background thread ---------------------------------------------------------------
    def _command(self, job: TrainJob) -> list[str]:
        eng = self.engine
        return [
            sys.executable,
            "-m",
            "persona_engine.service.train_worker",
            "--home",
            str(eng.home),
            "--backend",
            job.backend,
            "--config",
            json.dumps(job.config),
            "--encoder",
            eng.encoder_name,
            "--encoder-config",
            json.dumps(eng.encoder_config),
        ]

    def _run(self, job: TrainJob, release: Callable[[], None]) -> None:
        env = {**os.environ, ENV_DATABASE: self.engine.store.database}
        try:
            self._proc = subprocess.Popen(
                self._command(job),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            try:
                out, err = self._proc.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.communicate()
                raise RuntimeError(
                    f"training took longer than {self.timeout_s:.0f}s and was stopped"
                ) from None
            result = self._last_json(out)
            if "model_id" not in result:
                message = (
                    result.get("error", {}).get("message")
                    or (err.strip().splitlines() or ["training process failed"])[-1]
                )
                raise RuntimeError(f"{message} (exit status {self._proc.returncode})")
            self._switch(str(result["model_id"]))
            job.model_id, job.state = str(result["model_id"]), "succeeded"
        except Exception as e:
            log.warning("training job %s failed: %s", job.id, e)
            job.error, job.state = str(e), "failed"
        finally:
            job.finished_at = utcnow()
            self._proc = None
            release()

    @staticmethod
    def _last_json(out: str) -> dict[str, Any]:
        for line in reversed(out.strip().splitlines()):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
        return {}

    def _switch(self, model_id: str) -> None:
        eng = self.engine
        rec, backend = eng.load_model(model_id)
        previous = eng.store.active_model(rec.backend)
        if backend.personalized and previous is not None:
            # profiled under the version being replaced (e.g. onboarded while this one trained)
            stale = eng.store.profile_users(previous.id, without=model_id)
            users = [u for u in stale if u not in self._deleted]
            update = getattr(eng, "update_profiles", None)
            if callable(update) and users:
                update(users, model=model_id)  # batched re-embedding, where the engine has it
            else:
                for user_id in users:
                    try:
                        eng.onboard(user_id, model=model_id)
                    except Exception as e:  # one user's failure must not block the switch
                        log.warning("could not place %r under %s: %s", user_id, model_id, e)
        with self._lock:
            deleted = set(self._deleted)
        self.writer.submit(self._activate, model_id, deleted).result(timeout=120)

    def _activate(self, model_id: str, deleted: set[str]) -> None:
        store = self.engine.store
        for user_id in deleted:
            store.delete_profile(user_id, model_id)
            if store.has_user(user_id) and store.count_comparisons(user_id) == 0:
                store.delete_user(user_id)
        store.activate_model(model_id)
