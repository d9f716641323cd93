"""``text3d dataset ASSETS... --out DIR --images N``: a thin shell over :func:`text3d.dataset.build.build_dataset`.

Settings: defaults <- ``--config`` YAML (a dataset's ``dataset.yaml`` works: its ``config`` section) <- ``--set``
<- explicit flags. Exit codes: 0 written; 2 a user error, one line, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Render random scenes of 3D assets with exact labels (boxes and masks from the rasterizer's triangle ids) into an
Ultralytics YOLO dataset (images/, labels/, data.yaml) or COCO (annotations/instances_{train,val}.json).

Assets: .glb / .gltf / .obj files, text3d run folders (class: the prompt), or batch folders (every completed
run). Class names come from the asset, or from --classes FILE (YAML 'asset: class'; assets may share a class).
Every randomisation range is a setting (--set scene.objects=[1,6], light.temperature=[2500,8000], ...); the
resolved settings are saved as DIR/dataset.yaml and the same seed gives the same dataset, byte for byte.
Edge cases: --target occlusion=0.6 --target brightness=0.08 searches each scene by gradient descent.
Train:  yolo detect train data=DIR/data.yaml model=yolo26n.pt imgsz=640
"""


def add_dataset_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dataset",
        help="synthetic detector datasets (YOLO / COCO) from assets, with exact labels",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("assets", nargs="*", help="GLB / OBJ files, run folders or batch folders")
    p.add_argument("--out", required=True, type=Path, help="dataset folder (created; must be new or empty)")
    p.add_argument("--images", type=int, help="number of images (default 100)")
    p.add_argument("--format", help="yolo (default), yolo-seg or coco")
    p.add_argument("--size", type=int, help="image side in pixels (default 640)")
    p.add_argument("--val", type=float, help="validation fraction in [0, 1) (default 0.2)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--classes", type=Path, metavar="FILE", help="YAML / JSON mapping asset -> class name")
    p.add_argument("--backgrounds", metavar="DIR", help="a folder of pictures to use as backgrounds")
    p.add_argument(
        "--target", action="append", default=[], metavar="NAME=VALUE",
        help="edge-case search goal per image: occlusion=0.6, brightness=0.08 (repeatable)",
    )  # fmt: skip
    p.add_argument("--device", help="cpu (default), cuda, ...")
    p.add_argument("--config", type=Path, help="a YAML file of settings")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any setting by dotted path"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_dataset)


def config_from_args(args: argparse.Namespace):
    import yaml

    from text3d.config import apply_overrides, from_dict
    from text3d.dataset.config import DatasetConfig
    from text3d.errors import ConfigError

    cfg = DatasetConfig()
    if args.config:
        try:
            data = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {args.config} does not exist") from None
        except yaml.YAMLError as err:
            raise ConfigError(
                f"config file {args.config} is not valid YAML: {str(err).splitlines()[0]}"
            ) from None
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            data = data["config"]  # a dataset.yaml
        if not isinstance(data, dict):
            raise ConfigError(f"config file {args.config} must hold a mapping of settings")
        cfg = from_dict(DatasetConfig, data, "config")
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        cfg = apply_overrides(cfg, {key.strip(): value.strip()})
    flags = {
        "images": args.images, "format": args.format, "size": args.size, "val": args.val, "seed": args.seed,
        "device": args.device, "background.folder": args.backgrounds,
    }  # fmt: skip
    cfg = apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None})
    if args.target:
        cfg = apply_overrides(cfg, {"search.targets": list(args.target)})
    return cfg


def cmd_dataset(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from text3d.dataset.build import build_dataset

    cfg = config_from_args(args)
    bar = None

    def progress(done: int, total: int, image) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="img", file=sys.stderr, disable=args.quiet, dynamic_ncols=True)
        bar.update(1)

    try:
        result = build_dataset(args.assets, args.out, cfg, args.classes, args.overwrite, callback=progress)
    finally:
        if bar is not None:
            bar.close()
    for line in result.unreached:
        print(f"warning: {line}", file=sys.stderr)
    print(
        f"wrote {result.images} images, {result.labels} labels to {result.out} "
        f"({result.images_per_second:.2f} images/s)"
    )
    if cfg.format != "coco":
        print(f"train: yolo detect train data={result.out / 'data.yaml'}")
    return 0
