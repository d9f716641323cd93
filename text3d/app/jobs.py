"""The web app's job runner: one worker thread, a FIFO queue, one loaded model, cancel by flag.

Why a runner of our own rather than Gradio's queue: the work must run in-process on the one model that is
already loaded (reloading SD costs tens of seconds), exactly one job may use the device at a time, a waiting
user must see their place in line, and Cancel must reach a job that is *running* (Gradio can only drop events
it has not started). The runner knows nothing about Gradio, so it is tested on its own and could sit behind
any other front end.

A job runs :func:`text3d.pipeline.generate` with a callback that records the latest
:class:`~text3d.trainer.Progress` and raises :class:`~text3d.errors.Cancelled` once the job's cancel flag is
set, so a cancelled run stops at the next training step, writes a checkpoint and marks its ``run.json``
``cancelled``: the folder stays consistent and resumable.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from text3d.config import GenerateConfig
from text3d.errors import Cancelled, Text3DError
from text3d.pipeline import RunResult, generate, new_run_dir
from text3d.training.trainer import Progress

log = logging.getLogger(__name__)


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    LOADING = "loading"
    """Waiting for the model to load (only the first job after start, or after a failed load)."""
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.FAILED)


class QueueFullError(Text3DError):
    """Too many jobs are waiting; the user should try again later."""


class BusyError(Text3DError):
    """This owner (browser session) already has a job running or waiting."""


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent, immutable view of one job, safe to read from any thread."""

    id: str
    status: JobStatus
    prompt: str
    position: int = 0
    """1-based place in the waiting line while queued (1 = next to run); 0 otherwise."""
    progress: Progress | None = None
    preview: Path | None = None
    """The newest preview image this job wrote (a unique file per step, so browsers never show a stale one)."""
    run_dir: Path | None = None
    result: RunResult | None = None
    error: str | None = None
    version: int = 0
    """Increases on every change; pass it to :meth:`JobRunner.wait` to sleep until the next change."""
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    stages: tuple[str, ...] = ()
    """The training stages this job runs, in order (for "stage 2 of 2")."""
    notes: tuple[str, ...] = ()
    """Warnings for the user about this job, e.g. that the text encoder cuts the prompt off."""

    @property
    def done(self) -> bool:
        return self.status.done


JobWork = Callable[[object, Callable[[Progress], None], Path, object], RunResult]
"""A job other than :func:`generate`: ``work(cfg, callback, run_dir, guidance) -> RunResult``, where ``guidance`` is
the app's loaded diffusion model if the job was submitted with ``needs_model`` (texturing from a prompt), else
``None`` (a photo fit)."""


@dataclass
class _Job:
    id: str
    cfg: GenerateConfig
    owner: str
    snap: JobSnapshot
    cancel: threading.Event = field(default_factory=threading.Event)
    work: JobWork | None = None
    """``None``: :func:`generate` on the loaded model."""
    needs_model: bool = True


GuidanceLoader = Callable[[], object]

STAGE_NAMES = ("coarse", "refine")
"""The config sections of the training stages, in run order (as :func:`text3d.pipeline.build_stages` builds them)."""


def planned_stages(cfg: GenerateConfig) -> tuple[str, ...]:
    """Names of the stages ``cfg`` will train (a stage with 0 steps is skipped), without building them."""
    return tuple(name for name in STAGE_NAMES if getattr(getattr(cfg, name, None), "steps", 0) > 0)


class JobRunner:
    """Runs :func:`generate` jobs one at a time on a single, lazily loaded and then reused model.

    Args:
        loader: loads the guidance model; called once, on the first job (or by :meth:`preload`), and again only
            if that load failed. The text encoder is kept: new prompts keep arriving.
        guidance: an already loaded model (tests, or an app that shares one with batch mode); skips ``loader``.
        max_queued: jobs allowed to wait at once; one more raises :class:`QueueFullError` so a flood of clicks
            cannot pin every server thread.
        keep_finished: finished jobs remembered for :meth:`snapshot` (their run folders stay on disk regardless).
    """

    def __init__(
        self,
        loader: GuidanceLoader | None = None,
        guidance: object | None = None,
        *,
        max_queued: int = 16,
        keep_finished: int = 200,
    ):
        if loader is None and guidance is None:
            raise ValueError("JobRunner needs a loader or a loaded guidance model")
        self._loader = loader
        self._guidance = guidance
        self.loads = 0
        """How many times the model was loaded (1 in a healthy app, whatever the number of jobs)."""
        self.max_queued = max_queued
        self._keep_finished = keep_finished
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._current: _Job | None = None
        self._closed = False
        self._preload = False
        self._thread = threading.Thread(target=self._work, name="text3d-jobs", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API (any thread)
    def submit(
        self,
        cfg: GenerateConfig,
        owner: str = "",
        work: JobWork | None = None,
        title: str = "",
        needs_model: bool = False,
    ) -> JobSnapshot:
        """Queue a run of ``cfg``; returns its first snapshot (status ``queued``, with its position).

        ``work`` runs a job of another kind (a photo fit, a texture: ``cfg`` is then its config, ``title`` names it
        and its run folder); it shares the queue, since it shares the device, and gets the loaded diffusion model
        only when ``needs_model``.

        Raises:
            PromptError: the prompt is empty (checked here so that no job and no run folder is created).
            QueueFullError: ``max_queued`` jobs are already waiting.
            BusyError: ``owner`` already has an unfinished job. One per session keeps a double click (or an
                impatient second prompt) from interleaving two jobs' updates on one page and hogging the queue.
        """
        from text3d.errors import PromptError

        if work is None and not cfg.prompt.strip():
            raise PromptError("the prompt is empty; describe the object, e.g. “a ceramic owl mug”")
        with self._cond:
            if self._closed:
                raise RuntimeError("the job runner is closed")
            if owner and any(j.owner == owner and not j.snap.done for j in self._jobs.values()):
                raise BusyError(
                    "you already have a job running or waiting; cancel it or wait for it to finish first"
                )
            if len(self._queue) >= self.max_queued:
                raise QueueFullError(
                    f"{len(self._queue)} jobs are already waiting; try again when the queue is shorter"
                )
            job_id = uuid.uuid4().hex[:12]
            snap = JobSnapshot(
                job_id,
                JobStatus.QUEUED,
                cfg.prompt if work is None else title,
                submitted_at=time.time(),
                stages=planned_stages(cfg),
            )
            job = _Job(job_id, cfg, owner, snap, work=work, needs_model=work is None or needs_model)
            self._jobs[job_id] = job
            self._queue.append(job)
            self._renumber()
            self._forget_old()
            self._cond.notify_all()
            return job.snap

    def cancel(self, job_id: str) -> bool:
        """Ask a job to stop. A queued job is dropped at once (no run folder); a running one stops at its next
        training step. Returns ``False`` if the job is unknown or already finished."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.snap.done:
                return False
            job.cancel.set()
            if job in self._queue:
                self._queue.remove(job)
                self._update(job, status=JobStatus.CANCELLED, position=0, finished_at=time.time())
                self._renumber()
            else:
                self._update(job, cancel_requested=True)
            return True

    def cancel_owned_by(self, owner: str) -> list[str]:
        """Cancel every unfinished job submitted by ``owner`` (a browser session); returns their ids."""
        with self._cond:
            ids = [j.id for j in self._jobs.values() if j.owner == owner and not j.snap.done]
        return [job_id for job_id in ids if self.cancel(job_id)]

    def unfinished_job(self, owner: str) -> JobSnapshot | None:
        """The owner's running or queued job (at most one: :meth:`submit` refuses a second), or ``None``."""
        with self._cond:
            for job in self._jobs.values():
                if job.owner == owner and not job.snap.done:
                    return job.snap
        return None

    def snapshot(self, job_id: str) -> JobSnapshot:
        with self._cond:
            return self._jobs[job_id].snap

    def wait(self, job_id: str, after_version: int = -1, timeout: float | None = None) -> JobSnapshot:
        """Block until the job changes past ``after_version`` (or ``timeout`` seconds pass); return its snapshot."""
        with self._cond:
            job = self._jobs[job_id]
            self._cond.wait_for(lambda: job.snap.version > after_version, timeout)
            return job.snap

    def wait_done(self, job_id: str, timeout: float | None = None) -> JobSnapshot:
        with self._cond:
            job = self._jobs[job_id]
            self._cond.wait_for(lambda: job.snap.done, timeout)
            return job.snap

    def jobs(self) -> list[JobSnapshot]:
        """Every remembered job, oldest first."""
        with self._cond:
            return [j.snap for j in self._jobs.values()]

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._current is not None or bool(self._queue)

    def preload(self) -> None:
        """Load the model in the worker now, so the first user does not wait for it (errors surface on that
        user's job, which retries the load)."""
        with self._cond:
            self._preload = True
            self._cond.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Cancel everything, let the running job checkpoint, and stop the worker thread."""
        with self._cond:
            self._closed = True
            for job in list(self._queue):
                job.cancel.set()
                self._update(job, status=JobStatus.CANCELLED, position=0, finished_at=time.time())
            self._queue.clear()
            if self._current is not None:
                self._current.cancel.set()
            self._cond.notify_all()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ worker thread
    def _update(self, job: _Job, **changes) -> None:
        """Replace the job's snapshot (caller holds the lock) and wake every waiter."""
        job.snap = replace(job.snap, version=job.snap.version + 1, **changes)
        self._cond.notify_all()

    def _renumber(self) -> None:
        for index, job in enumerate(self._queue, start=1):
            if job.snap.position != index:
                self._update(job, position=index)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.snap.done]
        for job in finished[: max(0, len(finished) - self._keep_finished)]:
            del self._jobs[job.id]

    def _ensure_guidance(self):
        if self._guidance is None:
            self.loads += 1
            self._guidance = self._loader()
        return self._guidance

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed or self._preload)
                if self._closed:
                    return
                if not self._queue:  # a preload request with nothing to run yet
                    self._preload = False
                    job = None
                else:
                    job = self._queue.popleft()
                    self._current = job
                    status = JobStatus.RUNNING if self._guidance is not None else JobStatus.LOADING
                    self._update(job, status=status, position=0, started_at=time.time())
                    self._renumber()
            if job is None:
                try:
                    self._ensure_guidance()
                except Exception as err:  # reported again, to a user, by the first job's own load
                    log.warning("preloading the model failed: %s", err)
                continue
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._current = None
                    self._forget_old()
                    self._cond.notify_all()

    def _run(self, job: _Job) -> None:
        try:
            notes: tuple[str, ...] = ()
            guidance = None
            if job.needs_model:
                guidance = self._ensure_guidance()
                truncation = getattr(guidance, "truncation_notes", None)  # shown to the user, not only logged
                if truncation and job.cfg.prompt:
                    notes = tuple(truncation(job.cfg.prompt, job.cfg.negative_prompt))
            if job.cancel.is_set():
                raise Cancelled()
            run_dir = new_run_dir(job.cfg.out_dir, job.snap.prompt)
            with self._cond:
                self._update(job, status=JobStatus.RUNNING, run_dir=run_dir, notes=notes)

            def on_progress(progress: Progress) -> None:
                with self._cond:
                    preview = progress.preview if progress.preview is not None else job.snap.preview
                    self._update(job, progress=progress, preview=preview)
                if job.cancel.is_set():
                    raise Cancelled()

            if job.work is None:
                result = generate(job.cfg, guidance=guidance, callback=on_progress, run_dir=run_dir)
            else:
                result = job.work(job.cfg, on_progress, run_dir, guidance)
            outcome = {"status": JobStatus.COMPLETED, "result": result}
        except Cancelled:
            outcome = {"status": JobStatus.CANCELLED}
        except Text3DError as err:
            outcome = {"status": JobStatus.FAILED, "error": str(err)}
        except Exception as err:  # one job's crash must not take the app (or the next job) down
            log.exception("job %s failed", job.id)
            outcome = {"status": JobStatus.FAILED, "error": f"{type(err).__name__}: {err}"}
        finally:
            clear = getattr(self._guidance, "clear_text_cache", None)
            if clear is not None:  # embeddings of past prompts are never reused; don't let them pile up
                clear()
        with self._cond:
            self._update(job, finished_at=time.time(), **outcome)
