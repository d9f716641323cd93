"""text3d: a prompt becomes a textured mesh through Score Distillation Sampling.

The library entry point is :func:`text3d.pipeline.generate`; the CLI, the web app and batch mode are thin shells
over it. Imports here stay light so ``text3d --help`` is fast.
"""

__version__ = "0.1.0"
