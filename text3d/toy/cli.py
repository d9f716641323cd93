"""``text3d toy-model``: train the toy world's Stable Diffusion, or check a trained one."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path


def add_toy_parser(sub) -> argparse.ArgumentParser:
    """Add ``toy-model`` (with ``train`` and ``check``) to the ``text3d`` subcommands."""
    toy = sub.add_parser("toy-model", help="train (or check) the tiny SD trained on rendered primitives")
    toy_sub = toy.add_subparsers(dest="toy_command", required=True)
    tr = toy_sub.add_parser("train", help="render the toy world and train a diffusers SD folder at OUT")
    tr.add_argument("out", type=Path, metavar="OUT")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--minutes", type=float, help="hard cap on the whole run; stops early and says so")
    tr.add_argument("--images", type=int, help="training images (default: ToyWorldConfig.n_images)")
    tr.add_argument("--vae-steps", type=int)
    tr.add_argument("--unet-steps", type=int)
    ck = toy_sub.add_parser("check", help="DDIM-sample every (shape, colour) caption and label the samples")
    ck.add_argument("folder", nargs="?", type=Path, help="a toy model folder (default: the committed one)")
    ck.add_argument("--seeds", type=int, default=1)
    ck.add_argument(
        "--grid",
        type=Path,
        metavar="FILE.png",
        help="also write one sample per caption (seed 0): a row per primitive, a column per colour, then the "
        "crate's view words",
    )
    toy.set_defaults(func=run)
    return toy


def run(args: argparse.Namespace) -> int:
    if args.toy_command == "train":
        from text3d.toy.train import ToyTrainConfig, train

        cfg = ToyTrainConfig(seed=args.seed, minutes=args.minutes)
        if args.images:
            cfg = replace(cfg, world=replace(cfg.world, n_images=args.images))
        if args.vae_steps is not None:
            cfg = replace(cfg, vae_steps=args.vae_steps)
        if args.unet_steps is not None:
            cfg = replace(cfg, unet_steps=args.unet_steps)
        train(args.out, cfg)
        return 0
    from text3d.toy.checks import crate_view_check, reference_set, sample_check
    from text3d.toy.model import DEFAULT_MODEL_DIR, load_parts

    parts = load_parts(args.folder or DEFAULT_MODEL_DIR)
    seeds = tuple(range(args.seeds))
    res = sample_check(parts, reference_set(), seeds)
    print(f"shape {res.shape_acc:.0%}, colour {res.colour_acc:.0%} of {res.n} samples")
    for miss in res.misses:
        print(f"  {miss}")
    if args.grid:
        from text3d.io import write_bytes
        from text3d.toy.checks import sample_grid

        write_bytes(args.grid, sample_grid(parts))
        print(f"wrote {args.grid}")
    shares = crate_view_check(parts, seeds)
    print(
        "crate, yellow (front) share of the object per view word: "
        + ", ".join(f"{k} {v:.2f}" for k, v in shares.items())
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m text3d.toy.cli train OUT``."""
    parser = argparse.ArgumentParser(prog="text3d")
    add_toy_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["toy-model", *(argv if argv is not None else __import__("sys").argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
