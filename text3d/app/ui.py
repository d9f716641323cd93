"""The Gradio 6 page: a thin layer that turns form values into a config, hands it to the :class:`JobRunner`,
and streams the job's snapshots back as status text, preview, video, 3D viewer and downloads.

No generation logic lives here: a job is the same :func:`text3d.pipeline.generate` call the CLI makes, and the
words, config rules and file lookups come from ``status.py``, ``form.py`` and ``runs.py``.

API (``gradio_client``): ``/generate`` takes the form's fields by name (only ``prompt`` is required) and returns
``(status, preview, video, glb, downloads, past_runs)`` with file paths; ``/cancel`` stops the caller's own jobs;
``/list_runs`` returns the gallery of past runs.

The 3D viewer is filled by a one-shot event chained after ``/generate``, not by the generator itself: Gradio 6.31's
``Model3D`` never draws a model that a streaming event sets, because the final message re-sends the same value
and cancels the viewer's pending load (seen in chromium: no ``<canvas>``; a plain event draws it).
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home

import contextlib
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from text3d.app.form import FormValues, config_from_form, form_defaults, has_path, knob_paths
from text3d.app.jobs import JobRunner, JobSnapshot, JobStatus
from text3d.app.runs import RunView, example_prompts, obj_zip, read_run, scan_runs
from text3d.app.status import code, describe, describe_past_run, toast
from text3d.app.uploads import stage_photos
from text3d.config import PRESETS, GenerateConfig, apply_overrides
from text3d.errors import ConfigError, Text3DError
from text3d.export.exporter import ExportConfig
from text3d.guidance.stable_diffusion import WEIGHTINGS
from text3d.pipeline import slugify
from text3d.recipes.fit import FIT_PRESETS, FitConfig
from text3d.recipes.text_to_3d import RefineStageConfig
from text3d.recipes.texture import TEXTURE_PRESETS, TextureConfig
from text3d.validation import MAX_TEXTURE, MIN_RESOLUTION, MIN_TEXTURE, check_settings

MAX_SESSIONS = 10_000
"""Page sessions remembered for :meth:`WebApp._owner` (the oldest are forgotten first)."""

PREVIEW_EVERY_S = 3.0
"""Wall-clock preview cadence the app asks of the trainer (unless the base config sets its own)."""

CSS = """
#status { min-height: 3.2em; }
#status p { margin: 0.2em 0; }
#preview img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
footer { display: none !important; }
"""

_SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"]
_MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def _theme() -> gr.themes.Base:
    """Soft theme with system fonts: the default theme pulls web fonts from Google, which an offline GPU box
    (or a test machine) cannot reach, and the page then waits on them."""
    return gr.themes.Soft(primary_hue="indigo", font=_SYSTEM_FONTS, font_mono=_MONO_FONTS)


CACHE_PREFIX = "text3d-app-"
"""The app's zip cache is ``<tmp>/text3d-app-<pid>-<random>``: the pid says whose it is."""


def remove_stale_caches(tmp: str | os.PathLike | None = None) -> list[Path]:
    """Remove zip caches left in the temporary folder by app processes that are gone (a SIGKILL, a crash); a
    running app's cache, and anything not named like one, is left alone. Returns what was removed."""
    removed = []
    for folder in Path(tmp or tempfile.gettempdir()).glob(f"{CACHE_PREFIX}*-*"):
        pid = folder.name[len(CACHE_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or not folder.is_dir():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: does the process exist?
            continue
        except ProcessLookupError:
            pass
        except PermissionError:  # it exists, under another user
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


class WebApp:
    """The web app: a :class:`gr.Blocks` page plus the :class:`JobRunner` it feeds.

    Args:
        base_config: settings every job starts from (model, device, output folder, any config field); the
            preset and the form's values are applied on top.
        guidance: an already loaded model; when ``None`` it is loaded from ``base_config.model`` by the worker,
            once, and kept (text encoder included, since new prompts keep arriving).
        preset: the preset selected when the page opens.
        prompts_dir: folder of ``*.txt`` prompt files offered as clickable examples.
        poll_s: the shortest interval between two updates sent to a browser.
        fit_config: settings every "From photos" job (``text3d fit``) starts from; its preset and the tab's
            values are applied on top.
        fit_preset: the photo tab's preset when the page opens.
        texture_config, texture_preset: the same for the "Texture a mesh" tab (``text3d texture``).
    """

    def __init__(
        self,
        base_config: GenerateConfig,
        guidance: object | None = None,
        *,
        preset: str = "quality",
        prompts_dir: str | Path = "prompts",
        max_queued: int = 16,
        poll_s: float = 0.5,
        preload: bool = False,
        fit_config: FitConfig | None = None,
        fit_preset: str = "fast",
        texture_config: TextureConfig | None = None,
        texture_preset: str = "fast",
    ):
        if base_config.trainer.preview_every_s <= 0:
            base_config = apply_overrides(base_config, {"trainer.preview_every_s": PREVIEW_EVERY_S})
        if has_path(base_config, "export.formats"):  # the viewer needs the GLB, the zip download the OBJ
            formats = tuple(base_config.export.formats)
            wanted = formats + tuple(f for f in ("glb", "obj") if f not in formats)
            base_config = apply_overrides(base_config, {"export.formats": ",".join(wanted)})
        self.base = base_config
        self.preset = preset
        self.fit_base = fit_config or FitConfig(device=base_config.device)
        """Settings every "From photos" job starts from (its output folder is always the app's)."""
        self.fit_preset = fit_preset
        self.texture_base = texture_config or TextureConfig(device=base_config.device)
        """Settings every "Texture a mesh" job starts from (the model is the app's, already loaded)."""
        self.texture_preset = texture_preset
        self.poll_s = poll_s
        self.out_dir = Path(base_config.out_dir).resolve()
        self.prompts_dir = Path(prompts_dir)
        remove_stale_caches()
        self.cache_dir = Path(tempfile.mkdtemp(prefix=f"{CACHE_PREFIX}{os.getpid()}-"))
        """Zips of OBJ sets live here, not in the run folders, which belong to the pipeline and exporter."""
        from text3d.pipeline import load_guidance

        self.runner = JobRunner(
            loader=lambda: load_guidance(self.base), guidance=guidance, max_queued=max_queued
        )
        if preload:
            self.runner.preload()
        self._browsers: OrderedDict[str, str] = OrderedDict()
        """Gradio session -> browser id (kept in the browser's localStorage), so that a reloaded page, which
        gets a new session, still owns the job it started."""
        self._browsers_lock = threading.Lock()
        self.blocks = self._build()
        self.url: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def launch(
        self,
        host: str = "127.0.0.1",
        port: int | None = 7860,
        share: bool = False,
        prevent_thread_lock: bool = False,
        quiet: bool = False,
    ) -> str:
        """Serve the page; returns its local URL. Blocks until interrupted unless ``prevent_thread_lock``."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.blocks.queue(default_concurrency_limit=1, max_size=self.runner.max_queued * 4)
        _, url, _ = self.blocks.launch(
            server_name=host,
            server_port=port,
            share=share,
            prevent_thread_lock=True,
            quiet=quiet,
            show_error=True,
            allowed_paths=[str(self.out_dir), str(self.cache_dir)],
            theme=_theme(),
            css=CSS,
        )
        self.url = url
        if not prevent_thread_lock:
            self.blocks.block_thread()
        return url

    def close(self) -> None:
        """Stop the server, cancel waiting jobs, let the running one checkpoint, remove the zip cache."""
        self.runner.close()
        self.blocks.close()
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    # ------------------------------------------------------------------ helpers
    def _downloads(self, view: RunView | None) -> list[str] | None:
        if view is None:
            return None
        files = [str(view.glb)] if view.glb is not None else []
        if view.obj is not None:
            files.append(str(obj_zip(view.obj, self.cache_dir, view.run_dir.name)))
        return files or None

    def _result_outputs(self, view: RunView | None, preview: Path | None) -> tuple:
        """``(preview, video, glb, downloads)`` for a finished (or past) run."""
        if view is None:
            return (str(preview) if preview else None), None, None, None
        video = view.video
        if video is not None and video.suffix.lower() == ".gif":  # no mp4 encoder: the gif plays as an image
            preview, video = video, None
        else:
            preview = view.preview or preview
        return (
            str(preview) if preview else None,
            str(video) if video else None,
            str(view.glb) if view.glb else None,
            self._downloads(view),
        )

    def _gallery(self) -> tuple[list[tuple[str, str]], list[str]]:
        views = scan_runs(self.out_dir)
        return [(str(v.preview), v.caption) for v in views], [str(v.run_dir) for v in views]

    def _owner(self, request: gr.Request | None) -> str:
        """Whose job this is: the browser's id when the page registered one (it survives reloads), else the
        Gradio session (API clients), so Cancel and a reloaded page reach only the caller's own jobs."""
        session = getattr(request, "session_hash", None) or "anonymous"
        with self._browsers_lock:
            return self._browsers.get(session, session)

    def _attach_fn(self):
        app = self

        def attach(browser_id: str | None, request: gr.Request) -> str:
            """Tie this page's session to the browser's id (a new random one on the first visit); returns the id
            for the browser to keep."""
            if not (isinstance(browser_id, str) and len(browser_id) == 32 and browser_id.isalnum()):
                browser_id = uuid.uuid4().hex
            session = getattr(request, "session_hash", None)
            if session:
                with app._browsers_lock:
                    app._browsers[session] = browser_id
                    app._browsers.move_to_end(session)
                    while len(app._browsers) > MAX_SESSIONS:
                        app._browsers.popitem(last=False)
            return browser_id

        return attach

    def _reattach_fn(self):
        app = self

        def reattach(request: gr.Request) -> Iterator[tuple]:
            """After a page (re)load: follow this browser's running or queued job, if it has one."""
            snap = app.runner.unfinished_job(app._owner(request))
            if snap is None:
                yield (gr.skip(),) * 8
                return
            prompt = snap.prompt  # back in the prompt box, so the page says what is running
            for update in app._follow(snap):
                yield prompt, *update
                prompt = gr.skip()

        return reattach

    # ------------------------------------------------------------------ event handlers (named for the API)
    def _generate_fn(self):
        app = self

        def generate(
            prompt: str,
            negative_prompt: str,
            preset: str,
            seed: float,
            steps: float,
            guidance_scale: float,
            resolution: float,
            refine_steps: float,
            refine_resolution: float,
            perp_neg: bool,
            view_dependent: bool,
            weighting: str,
            texture_size: float,
            request: gr.Request,
        ) -> Iterator[tuple]:
            """Generate a 3D asset from a prompt; streams status and preview, ends with video, GLB and downloads."""
            values = FormValues(
                prompt=prompt or "",
                negative_prompt=negative_prompt or "",
                preset=preset or app.preset,
                seed=None if seed is None else int(seed),
                steps=None if steps is None else int(steps),
                guidance_scale=guidance_scale,
                resolution=None if resolution is None else int(resolution),
                refine_steps=None if refine_steps is None else int(refine_steps),
                refine_resolution=None if refine_resolution is None else int(refine_resolution),
                perp_neg=perp_neg,
                view_dependent=view_dependent,
                weighting=weighting or None,
                texture_size=None if texture_size is None else int(texture_size),
            )
            try:
                cfg = config_from_form(app.base, values)
                snap = app.runner.submit(cfg, owner=app._owner(request))
            except Text3DError as err:
                raise gr.Error(toast(err), title="Nothing was started") from None
            for note in check_settings(
                cfg
            ):  # legal but suspicious (a guidance scale of 1e9): say so, run anyway
                gr.Warning(toast(note), title="Check this setting")
            yield from app._follow(snap)

        return generate

    def _follow(self, snap: JobSnapshot) -> Iterator[tuple]:
        """Stream a job's snapshots (at most one update per ``poll_s``) and then its results."""
        skip = gr.skip()
        yield describe(snap), None, None, None, None, skip, skip
        shown_version, shown_preview, shown_notes = snap.version, None, set()
        while not snap.done:
            time.sleep(self.poll_s)
            snap = self.runner.wait(snap.id, shown_version, timeout=10.0)
            for note in set(snap.notes) - shown_notes:  # e.g. the prompt is cut off: also in the status line
                gr.Warning(toast(note), title="About your prompt")
                shown_notes.add(note)
            if snap.version == shown_version or snap.done:
                continue
            shown_version = snap.version
            preview = skip
            if snap.preview is not None and snap.preview != shown_preview:
                preview = shown_preview = str(snap.preview)
            yield describe(snap), preview, skip, skip, skip, skip, skip
        view = None
        if snap.run_dir is not None:
            view = read_run(snap.run_dir, snap.result.meshes if snap.result else None)
        gallery, run_dirs = self._gallery()
        status = describe(snap, export_error=view.export_error if view is not None else None)
        yield status, *self._result_outputs(view, snap.preview), gallery, run_dirs
        if snap.status is JobStatus.FAILED:
            raise gr.Error(toast(snap.error or "the run failed"), title="The run failed")

    def _stage_upload(self, files: list[str], name: str) -> Path:
        """Uploaded photos laid out as a folder under ``<out>/.uploads/`` (kept, so the run can be resumed); a bad
        upload leaves nothing behind."""
        upload = self.out_dir / ".uploads" / f"{slugify(name)}-{uuid.uuid4().hex[:6]}"
        try:
            return stage_photos(files, upload)
        except Text3DError:
            shutil.rmtree(upload, ignore_errors=True)
            raise

    def _fit_config(
        self, files: list[str] | None, preset: str, steps: float | None, refine_steps: float | None
    ) -> tuple[FitConfig, str]:
        """The fit job's config and title: uploads staged under ``<out>/.uploads/``, preset, then the tab's steps."""
        if preset not in FIT_PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(FIT_PRESETS)}")
        for name, value, least in (("Steps", steps, 1), ("Mesh steps", refine_steps, 0)):
            if value is not None and (value != int(value) or value < least):
                raise ConfigError(f"{name} must be a whole number ≥ {least}, got {value:g}")
        names = [Path(f).name for f in files or []]
        stem = Path(names[0]).stem if len(names) == 1 else "photos"
        folder = self._stage_upload(files or [], stem)
        overrides = {**FIT_PRESETS[preset], "data": str(folder), "out_dir": str(self.out_dir)}
        if steps is not None:
            overrides["coarse.steps"] = str(int(steps))
        if refine_steps is not None:
            overrides["refine.steps"] = str(int(refine_steps))
        return apply_overrides(self.fit_base, overrides), f"fit {stem}"

    def _fit_fn(self):
        app = self

        def fit_photos(
            files: list[str] | None,
            preset: str,
            steps: float | None,
            refine_steps: float | None,
            request: gr.Request,
        ) -> Iterator[tuple]:
            """Fit a textured mesh to uploaded photos (``text3d fit``); streams status and preview, ends with video,
            GLB and downloads."""
            try:
                cfg, title = app._fit_config(files, preset or app.fit_preset, steps, refine_steps)
                snap = app.runner.submit(cfg, owner=app._owner(request), work=_fit_work, title=title)
            except Text3DError as err:
                raise gr.Error(toast(err), title="Nothing was started") from None
            yield from app._follow(snap)

        return fit_photos

    def _texture_config(
        self,
        mesh: str | None,
        prompt: str,
        concept: str | None,
        photos: list[str] | None,
        preset: str,
        steps: float | None,
    ) -> tuple[TextureConfig, str, bool]:
        """The texture job's config, title and whether it needs the diffusion model. The mode follows what was
        given: photos (photometric), a concept image with a prompt, or a prompt alone (SDS)."""
        if preset not in TEXTURE_PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(TEXTURE_PRESETS)}")
        if not mesh:
            raise ConfigError("no mesh: upload a GLB, glTF, OBJ or PLY file")
        if steps is not None and (steps != int(steps) or steps < 1):
            raise ConfigError(f"Steps must be a whole number ≥ 1, got {steps:g}")
        prompt = (prompt or "").strip()
        # the preset's own model (the toy one) is not switched to: the app's model is loaded already
        overrides = {k: v for k, v in TEXTURE_PRESETS[preset].items() if not k.startswith("model.")}
        overrides.update(mesh=str(mesh), out_dir=str(self.out_dir), prompt=prompt)
        if steps is not None:
            overrides["steps"] = str(int(steps))
        if photos:
            overrides["images"] = str(self._stage_upload(photos, "texture-photos"))
        elif not prompt:
            raise ConfigError("type a prompt (what the mesh should look like) or add photos of it")
        if concept and not photos:
            overrides["image"] = str(concept)
        cfg = apply_overrides(self.texture_base, overrides)
        title = f"texture {Path(mesh).stem}" + (f" {prompt}" if prompt else "")
        return cfg, title, not photos

    def _texture_fn(self):
        app = self

        def texture_mesh(
            mesh: str | None,
            prompt: str,
            concept: str | None,
            photos: list[str] | None,
            preset: str,
            steps: float | None,
            request: gr.Request,
        ) -> Iterator[tuple]:
            """Texture an uploaded mesh (``text3d texture``) from a prompt, a concept image + prompt, or posed
            photos; its geometry and UVs are kept. Streams status and preview, ends with video, GLB, downloads."""
            try:
                cfg, title, needs_model = app._texture_config(
                    mesh, prompt, concept, photos, preset or app.texture_preset, steps
                )
                snap = app.runner.submit(
                    cfg, owner=app._owner(request), work=_texture_work, title=title, needs_model=needs_model
                )
            except Text3DError as err:
                raise gr.Error(toast(err), title="Nothing was started") from None
            yield from app._follow(snap)

        return texture_mesh

    def _cancel_fn(self):
        app = self

        def cancel(request: gr.Request) -> str:
            """Cancel the caller's running or queued jobs; a running one stops at its next step."""
            ids = app.runner.cancel_owned_by(app._owner(request))
            if not ids:  # in the status line: a toast needs the queue, which Cancel skips to be instant
                return "No job of yours is running or waiting."
            return f"**Cancelling…** · {len(ids)} job{'s' if len(ids) > 1 else ''}; a checkpoint is being written."

        return cancel

    def _list_runs_fn(self):
        app = self

        def list_runs() -> tuple[list[tuple[str, str]], list[str]]:
            """The gallery of past runs, newest first, read from the output folder's run.json files."""
            return app._gallery()

        return list_runs

    def _show_run_fn(self):
        app = self

        def show_run(run_dirs: list[str], evt: gr.SelectData) -> tuple:
            """Load a past run from the gallery into the result views."""
            if not run_dirs or evt.index is None or evt.index >= len(run_dirs):
                return (gr.skip(),) * 5
            view = read_run(run_dirs[evt.index])
            if view is None:
                raise gr.Error("That run folder is gone or unreadable.")
            status = describe_past_run(view.prompt, view.status, view.run_dir)
            return status, *app._result_outputs(view, view.preview)

        return show_run

    def _preset_fn(self, knob_names: list[str]):
        app = self

        def apply_preset(preset: str) -> tuple:
            defaults = form_defaults(app.base, preset)
            values = (getattr(defaults, name) for name in knob_names)
            return tuple(gr.skip() if v is None else v for v in values)

        return apply_preset

    # ------------------------------------------------------------------ layout
    def _build(self) -> gr.Blocks:
        defaults = form_defaults(self.base, self.preset)
        offered = knob_paths(self.base)
        examples = example_prompts(self.prompts_dir)

        with gr.Blocks(title="text3d", delete_cache=(1800, 21600)) as blocks:  # previews pile up in the cache
            gr.Markdown(
                "# text3d\nType what you want, press **Generate**, watch it take shape, then orbit and download "
                "it. One job runs at a time; others wait in line."
            )
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=320):
                    with gr.Tabs(elem_id="modes"):
                        with gr.Tab("From a prompt", elem_id="prompt-tab"):
                            prompt = gr.Textbox(
                                label="Prompt",
                                placeholder="a ceramic owl mug",
                                lines=2,
                                max_lines=4,
                                elem_id="prompt",
                            )
                            negative = gr.Textbox(
                                label="Negative prompt",
                                value=defaults.negative_prompt or "",
                                placeholder="what to avoid, e.g. blurry, low quality",
                                elem_id="negative",
                            )
                            with gr.Row():
                                preset = gr.Dropdown(
                                    list(PRESETS),
                                    value=self.preset,
                                    label="Preset",
                                    elem_id="preset",
                                    min_width=100,
                                )
                                seed = gr.Number(
                                    value=defaults.seed,
                                    label="Seed",
                                    precision=0,
                                    info="-1 = random",
                                    elem_id="seed",
                                    min_width=100,
                                )
                            with gr.Row():
                                steps = gr.Number(
                                    value=defaults.steps,
                                    label="Steps",
                                    precision=0,
                                    minimum=0,
                                    info="NeRF (coarse) stage",
                                    elem_id="steps",
                                    min_width=100,
                                )
                                guidance_scale = gr.Number(
                                    value=defaults.guidance_scale,
                                    label="Guidance scale",
                                    minimum=0,
                                    info="SDS uses ~100",
                                    elem_id="guidance_scale",
                                    min_width=100,
                                )
                            with gr.Accordion("Advanced", open=False, elem_id="advanced"):
                                resolution = gr.Number(
                                    value=defaults.resolution,
                                    label="NeRF resolution (px)",
                                    precision=0,
                                    minimum=MIN_RESOLUTION,
                                    step=2,
                                    info="coarse stage renders; 64 is the anchors' default",
                                    visible="resolution" in offered,
                                )
                                refine_steps = gr.Number(
                                    value=defaults.refine_steps if defaults.refine_steps is not None else 0,
                                    label="Refine steps",
                                    precision=0,
                                    minimum=0,
                                    info="DMTet mesh stage; 0 skips it",
                                    visible="refine_steps" in offered,
                                )
                                refine_resolution = gr.Number(
                                    value=defaults.refine_resolution or RefineStageConfig.resolution,
                                    label="Refine resolution (px)",
                                    precision=0,
                                    minimum=MIN_RESOLUTION,
                                    step=2,
                                    info="mesh stage renders",
                                    visible="refine_resolution" in offered,
                                )
                                with gr.Row():
                                    perp_neg = gr.Checkbox(
                                        value=bool(defaults.perp_neg),
                                        label="Perp-Neg",
                                        info="fights multi-face (Janus) results",
                                        visible="perp_neg" in offered,
                                    )
                                    view_dependent = gr.Checkbox(
                                        value=bool(defaults.view_dependent)
                                        if defaults.view_dependent is not None
                                        else True,
                                        label="View-dependent prompts",
                                        info="adds “front/side/back view”",
                                        visible="view_dependent" in offered,
                                    )
                                weighting = gr.Dropdown(
                                    list(WEIGHTINGS),
                                    value=defaults.weighting or "sds",
                                    label="SDS weighting w(t)",
                                    visible="weighting" in offered,
                                )
                                texture_size = gr.Number(
                                    value=defaults.texture_size or ExportConfig.texture_size,
                                    label="Texture size (px)",
                                    precision=0,
                                    minimum=MIN_TEXTURE,
                                    maximum=MAX_TEXTURE,
                                    info="of the exported GLB/OBJ",
                                    visible="texture_size" in offered,
                                )
                            with gr.Row():
                                run_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
                            if examples:
                                with gr.Tabs(elem_id="examples"):
                                    for name, prompts in examples.items():
                                        with gr.Tab(name.replace("_", " ").capitalize()):
                                            gr.Examples(
                                                [[p] for p in prompts],
                                                inputs=[prompt],
                                                label=None,
                                                examples_per_page=8,
                                            )
                            else:
                                gr.Markdown(
                                    f"*No example prompts: add `*.txt` files (one prompt per line) to "
                                    f"{code(f'{self.prompts_dir}/')}.*"
                                )
                        with gr.Tab("From photos", elem_id="photos-tab"):
                            gr.Markdown(
                                "Posed photos (with their `transforms.json`, Blender or nerfstudio style), or plain "
                                "photos of an object from all around (poses are then solved), or one `.zip` of the "
                                "folder. Keep the object centred; masks (RGBA) help."
                            )
                            photo_files = gr.File(
                                label="Photos, transforms.json or one zip",
                                file_count="multiple",
                                file_types=["image", ".json", ".zip"],
                                elem_id="photo-files",
                            )
                            with gr.Row():
                                fit_preset = gr.Dropdown(
                                    list(FIT_PRESETS),
                                    value=self.fit_preset,
                                    label="Preset",
                                    elem_id="fit-preset",
                                    min_width=100,
                                )
                                fit_steps = gr.Number(
                                    value=None,
                                    label="Steps",
                                    precision=0,
                                    minimum=1,
                                    info="coarse (SDF or NeRF) stage; empty = preset",
                                    elem_id="fit-steps",
                                    min_width=100,
                                )
                                fit_refine_steps = gr.Number(
                                    value=None,
                                    label="Mesh steps",
                                    precision=0,
                                    minimum=0,
                                    info="DMTet stage; empty = preset",
                                    elem_id="fit-refine-steps",
                                    min_width=100,
                                )
                            with gr.Row():
                                fit_btn = gr.Button("Fit", variant="primary", elem_id="fit")
                                fit_cancel_btn = gr.Button("Cancel", variant="stop", elem_id="fit-cancel")
                        with gr.Tab("Texture a mesh", elem_id="texture-tab"):
                            gr.Markdown(
                                "Your mesh keeps its vertices, faces and UVs; only a new base-colour texture is "
                                "made. Describe it, add one concept image (taken as the front view), or add posed "
                                "photos of the object."
                            )
                            tex_mesh = gr.File(
                                label="Mesh (GLB, glTF, OBJ or PLY)",
                                file_count="single",
                                file_types=[".glb", ".gltf", ".obj", ".ply"],
                                type="filepath",
                                elem_id="texture-mesh",
                            )
                            tex_prompt = gr.Textbox(
                                label="Prompt",
                                placeholder="a weathered bronze statue",
                                lines=2,
                                max_lines=4,
                                elem_id="texture-prompt",
                            )
                            with gr.Accordion("Concept image or photos", open=False):
                                tex_concept = gr.Image(
                                    label="Concept image (front view; with the prompt)",
                                    type="filepath",
                                    elem_id="texture-concept",
                                )
                                tex_photos = gr.File(
                                    label="Posed photos + transforms.json, or one zip (instead of a prompt)",
                                    file_count="multiple",
                                    file_types=["image", ".json", ".zip"],
                                    elem_id="texture-photos",
                                )
                            with gr.Row():
                                tex_preset = gr.Dropdown(
                                    list(TEXTURE_PRESETS),
                                    value=self.texture_preset,
                                    label="Preset",
                                    elem_id="texture-preset",
                                    min_width=100,
                                )
                                tex_steps = gr.Number(
                                    value=None,
                                    label="Steps",
                                    precision=0,
                                    minimum=1,
                                    info="empty = preset",
                                    elem_id="texture-steps",
                                    min_width=100,
                                )
                            with gr.Row():
                                tex_btn = gr.Button("Texture", variant="primary", elem_id="texture")
                                tex_cancel_btn = gr.Button("Cancel", variant="stop", elem_id="texture-cancel")
                with gr.Column(scale=3, min_width=360):
                    # user text in it is escaped (status.text); no TeX either, so "$$" in a prompt stays text
                    status = gr.Markdown("Ready.", elem_id="status", latex_delimiters=[])
                    preview_img = gr.Image(
                        label="Preview (albedo above, geometry below)",
                        type="filepath",
                        interactive=False,
                        elem_id="preview",
                        height=260,
                    )
                    with gr.Row():
                        video = gr.Video(
                            label="Turntable",
                            autoplay=True,
                            loop=True,
                            interactive=False,
                            elem_id="video",
                            height=300,
                        )
                        model_file = gr.File(label="GLB", visible=False, interactive=False)
                        model_3d = gr.Model3D(
                            label="3D model (drag to orbit)",
                            clear_color=(0.95, 0.95, 0.97, 1.0),
                            interactive=False,
                            elem_id="model3d",
                            height=300,
                        )
                    downloads = gr.File(
                        label="Downloads (GLB; OBJ + MTL + texture as a zip)",
                        file_count="multiple",
                        interactive=False,
                        elem_id="downloads",
                    )
            with gr.Accordion("Past runs", open=True):
                gallery = gr.Gallery(
                    label="Past runs (click one to load it)",
                    columns=4,
                    height=260,
                    allow_preview=False,
                    object_fit="contain",
                    fit_columns=False,
                    elem_id="gallery",
                )
                refresh_btn = gr.Button("Refresh", size="sm")
            run_dirs = gr.State([])
            browser_id = gr.BrowserState("", storage_key="text3d-browser")

            knob_names = [
                "steps",
                "guidance_scale",
                "resolution",
                "refine_steps",
                "refine_resolution",
                "perp_neg",
                "view_dependent",
                "weighting",
                "texture_size",
            ]
            knob_components = [
                steps,
                guidance_scale,
                resolution,
                refine_steps,
                refine_resolution,
                perp_neg,
                view_dependent,
                weighting,
                texture_size,
            ]
            result_outputs = [status, preview_img, video, model_3d, downloads]
            started = gr.on(
                triggers=[run_btn.click, prompt.submit],
                fn=None,
                js="() => null",  # empty the viewer in the browser at once; the new model replaces it at the end
                outputs=[model_3d],
                queue=False,
            )
            finished = started.then(
                self._generate_fn(),
                inputs=[prompt, negative, preset, seed, *knob_components],
                outputs=[status, preview_img, video, model_file, downloads, gallery, run_dirs],
                api_name="generate",
                concurrency_limit=None,  # waiting handlers are cheap; the JobRunner serialises the work
                show_progress="hidden",
            )
            finished.success(
                _show_model, model_file, model_3d, api_visibility="private", show_progress="hidden"
            )
            cancel_btn.click(
                self._cancel_fn(), None, status, api_name="cancel", queue=False, show_progress="hidden"
            )
            fit_cancel_btn.click(
                self._cancel_fn(), None, status, api_visibility="private", queue=False, show_progress="hidden"
            )
            fitted = fit_btn.click(fn=None, js="() => null", outputs=[model_3d], queue=False).then(
                self._fit_fn(),
                inputs=[photo_files, fit_preset, fit_steps, fit_refine_steps],
                outputs=[status, preview_img, video, model_file, downloads, gallery, run_dirs],
                api_name="fit",
                concurrency_limit=None,
                show_progress="hidden",
            )
            fitted.success(
                _show_model, model_file, model_3d, api_visibility="private", show_progress="hidden"
            )
            tex_cancel_btn.click(
                self._cancel_fn(), None, status, api_visibility="private", queue=False, show_progress="hidden"
            )
            textured = tex_btn.click(fn=None, js="() => null", outputs=[model_3d], queue=False).then(
                self._texture_fn(),
                inputs=[tex_mesh, tex_prompt, tex_concept, tex_photos, tex_preset, tex_steps],
                outputs=[status, preview_img, video, model_file, downloads, gallery, run_dirs],
                api_name="texture",
                concurrency_limit=None,
                show_progress="hidden",
            )
            textured.success(
                _show_model, model_file, model_3d, api_visibility="private", show_progress="hidden"
            )
            preset.change(
                self._preset_fn(knob_names),
                preset,
                knob_components,
                api_visibility="private",
                show_progress="hidden",
            )
            gallery.select(
                self._show_run_fn(),
                run_dirs,
                result_outputs,
                api_visibility="private",
                show_progress="hidden",
            )
            list_runs = self._list_runs_fn()
            refresh_btn.click(list_runs, None, [gallery, run_dirs], api_name="list_runs")
            blocks.load(list_runs, None, [gallery, run_dirs], api_visibility="private")
            # A reloaded page finds its browser's job again (status, previews, result) and can cancel it.
            blocks.load(
                self._attach_fn(), browser_id, browser_id, queue=False, api_visibility="private"
            ).then(
                self._reattach_fn(),
                None,
                [prompt, status, preview_img, video, model_file, downloads, gallery, run_dirs],
                api_visibility="private",
                concurrency_limit=None,
                show_progress="hidden",
            ).success(_show_model, model_file, model_3d, api_visibility="private", show_progress="hidden")
        return blocks


def _fit_work(cfg: FitConfig, callback, run_dir: Path, guidance=None):
    """A "From photos" job: :func:`text3d.fitting.fit` into the runner's run folder."""
    from text3d.fitting import fit

    with _no_empty_run_dir(run_dir):
        return fit(cfg, callback=callback, run_dir=run_dir)


def _texture_work(cfg: TextureConfig, callback, run_dir: Path, guidance=None):
    """A "Texture a mesh" job: :func:`text3d.texturing.texture` on the app's loaded model (when it has a prompt)."""
    from text3d.texturing import texture

    with _no_empty_run_dir(run_dir):
        return texture(cfg, guidance=guidance, callback=callback, run_dir=run_dir)


@contextlib.contextmanager
def _no_empty_run_dir(run_dir: Path) -> Iterator[None]:
    """Input that turns out unusable once the job runs (structure-from-motion registers too few photos, a mesh
    file that is not one) leaves no empty run folder behind."""
    try:
        yield
    except Text3DError:
        if not (Path(run_dir) / "run.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _show_model(glb: str | None) -> str | None:
    """Put the finished run's GLB in the 3D viewer (a one-shot event; see the module docstring for why)."""
    return glb


def build_app(
    base_config: GenerateConfig,
    guidance: object | None = None,
    **options,
) -> WebApp:
    """The app over ``base_config`` (tests pass the tiny config and the tiny model); see :class:`WebApp`."""
    return WebApp(base_config, guidance, **options)
