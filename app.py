"""Start the text3d web app: ``python app.py [--host 127.0.0.1] [--port 7860] [--model ID_OR_PATH] [--share]``.

Only argument parsing and launch live here; the page is :mod:`text3d.app.ui`, the work is
:func:`text3d.pipeline.generate`. Nothing is shared and no analytics are sent unless asked for.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # must be set before gradio is imported anywhere

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="text3d web app: type a prompt, get a textured 3D model.")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for a LAN)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--model", help="hub id or local diffusers folder (default: the config's model)")
    p.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (off by default)"
    )
    p.add_argument("--out", help="folder for run folders and the gallery (default: outputs/)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--preset", default="quality", help="preset selected when the page opens")
    p.add_argument("--config", type=Path, help="a YAML file of base settings (a run's config.yaml works)")
    p.add_argument("--prompts", type=Path, default=Path("prompts"), help="folder of example prompt files")
    p.add_argument("--no-preload", action="store_true", help="load the model on the first job, not at start")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from text3d.cli import quiet_libraries
    from text3d.config import PRESETS, GenerateConfig, apply_overrides, load_config
    from text3d.errors import Text3DError

    quiet_libraries()
    try:
        if args.preset not in PRESETS:
            raise Text3DError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
        cfg = load_config(args.config) if args.config else GenerateConfig()
        flags = {"model": args.model, "device": args.device, "out_dir": args.out}
        cfg = apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None})
        from text3d.app import build_app

        app = build_app(cfg, preset=args.preset, prompts_dir=args.prompts, preload=not args.no_preload)
    except Text3DError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import signal

    def stop(
        signum, frame
    ):  # SIGTERM as Ctrl-C: close() cancels jobs (checkpointed) and removes the zip cache
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        app.launch(host=args.host, port=args.port, share=args.share)
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
