"""User-facing errors. Each carries one line that says what is wrong and how to fix it.

The CLI, the web app and batch mode print ``str(err)`` and nothing else (exit code 2 for the CLI). Library code
raises these instead of exiting, so callers decide what a failure means.
"""


class Text3DError(Exception):
    """Base class: an error the user can fix, with a one-line message."""


class ModelLoadError(Text3DError):
    """The diffusion model could not be loaded (missing, unreachable, or not a Stable Diffusion layout)."""


class PromptError(Text3DError):
    """The prompt is unusable (for example empty)."""


class ConfigError(Text3DError):
    """A configuration value or file is invalid."""


class RunDirError(Text3DError):
    """A run folder is missing, incomplete or not a text3d run."""


class PromptFileError(Text3DError):
    """A prompt file for batch mode is missing, unreadable or holds no prompts (bad *lines* are not errors:
    batch mode records them with their line numbers and carries on)."""


class Cancelled(Exception):  # noqa: N818 - reads as "raise Cancelled"
    """Raised from a progress callback to stop a run; the trainer checkpoints before it propagates."""


class PromptTruncatedWarning(UserWarning):
    """The prompt is longer than the text encoder's context and was truncated."""


class BackendUnavailableError(Text3DError):
    """A compute backend was asked for by name (e.g. the nvdiffrast rasterizer) but cannot run here."""


class ExportError(Text3DError):
    """A mesh could not be exported (empty isosurface, nothing left after clean-up, an unknown format)."""
