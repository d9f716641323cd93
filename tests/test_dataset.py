"""``text3d dataset``: labels checked against an independent ray-cast id render, COCO masks, reproducibility,
all-or-nothing writing and one-line errors."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from dataset_assets import write_assets  # noqa: E402
from dataset_raycast import box_iou, check_yolo_labels, id_render, shoelace, tight_box  # noqa: E402

from text3d.dataset.build import build_dataset  # noqa: E402
from text3d.dataset.config import DatasetConfig, SceneConfig  # noqa: E402

NAMES = ("ring", "cone", "capsule")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    return write_assets(tmp_path_factory.mktemp("assets"))


def small(**kw) -> DatasetConfig:
    """Small, crowded scenes (overlaps, hidden and cut-off objects are common)."""
    scene = SceneConfig(objects=(2, 5), distractors=(0, 2), depth=(2.5, 4.5), screen_extent=1.15)
    return dataclasses.replace(DatasetConfig(images=24, size=96, val=0.25, seed=3, scene=scene), **kw)


def _metas(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "meta").rglob("*.json"))]


def test_labels_match_an_independent_id_render(assets, tmp_path):
    """Every box is the tight box of the object's visible pixels in a ray-cast id render (IoU >= 0.99), every
    polygon's area is within 2 % of that mask's, hidden / tiny objects have no label, class ids match names.
    Coverage is decided in float64 on CPU, so not even pixel centres within 1/100 px of an edge (the tie band)
    may differ."""
    cfg = small()
    det = build_dataset(list(assets.values()), tmp_path / "det", cfg)
    seg = build_dataset(list(assets.values()), tmp_path / "seg", dataclasses.replace(cfg, format="yolo-seg"))
    names = yaml.safe_load((det.out / "data.yaml").read_text())["names"]
    assert [names[k] for k in sorted(names)] == list(NAMES)
    stats = check_yolo_labels(det.out, seg.out, cfg.labels.min_visible_pixels)
    print(stats)
    assert stats["worst_iou"] >= 0.99 and stats["worst_area"] <= 0.02 and stats["checked_exact"] >= 50
    assert stats["tie_pixels"] == 0 and stats["worst_iou"] > 0.9999  # YOLO writes 6 decimals
    # The check saw the hard cases: objects hidden by others, cut by the border, masks with holes or pieces.
    assert (
        stats["labels"] >= 60
        and stats["hidden"] >= 1
        and stats["truncated"] >= 5
        and stats["joined_loops"] >= 3
    )


def test_the_check_rejects_wrong_labels(assets, tmp_path):
    """The id-render check fails on a label moved by one pixel and on a dropped label."""
    cfg = small(images=4)
    det = build_dataset(list(assets.values()), tmp_path / "det", cfg).out
    label = next(p for p in sorted((det / "labels").rglob("*.txt")) if p.read_text().strip())
    good = label.read_text()
    rows = good.splitlines()
    cls, xc, yc, w, h = rows[0].split()
    shifted = f"{cls} {float(xc) + 1 / cfg.size:.6f} {yc} {w} {h}"
    for bad in ("\n".join([shifted, *rows[1:]]) + "\n", "".join(r + "\n" for r in rows[1:])):
        label.write_text(bad)
        stats = None
        try:
            stats = check_yolo_labels(det, None, cfg.labels.min_visible_pixels, exact_from=0)
        except AssertionError:
            pass
        assert stats is None or stats["worst_iou"] < 0.99
    label.write_text(good)
    assert check_yolo_labels(det, None, cfg.labels.min_visible_pixels, exact_from=0)["worst_iou"] >= 0.99


def test_coco_masks_match_the_id_render(assets, tmp_path):
    from text3d.dataset.labels import rle_decode

    cfg = small(images=8, format="coco")
    rle = build_dataset(list(assets.values()), tmp_path / "rle", cfg)
    poly = build_dataset(
        list(assets.values()),
        tmp_path / "poly",
        dataclasses.replace(cfg, labels=dataclasses.replace(cfg.labels, coco_masks="polygon")),
    )
    docs = {}
    for root in (rle.out, poly.out):
        for split in ("train", "val"):
            docs[(root, split)] = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    assert [c["name"] for c in docs[(rle.out, "train")]["categories"]] == list(NAMES)
    checked = 0
    for meta in _metas(rle.out):
        ref = id_render(meta)
        labelled = [k for k, o in enumerate(meta["objects"]) if o["labelled"]]
        for root in (rle.out, poly.out):
            doc = docs[(root, meta["split"])]
            image = next(i for i in doc["images"] if i["file_name"] == Path(meta["image"]).name)
            anns = [a for a in doc["annotations"] if a["image_id"] == image["id"]]
            assert len(anns) == len(labelled)
            for k, ann in zip(labelled, anns, strict=True):
                mask = ref.object_id == k
                assert ann["category_id"] - 1 == meta["objects"][k]["class_id"]
                x, y, w, h = ann["bbox"]
                assert box_iou((x, y, x + w, y + h), tight_box(mask)) >= 0.99
                if root == rle.out:
                    got = rle_decode(ann["segmentation"])
                    assert (got & mask).sum() / (got | mask).sum() >= 0.99
                else:
                    pts = np.asarray(ann["segmentation"][0]).reshape(-1, 2)
                    assert abs(shoelace(pts) - mask.sum()) <= 0.02 * mask.sum()
                checked += 1
    assert checked >= 20


def _files(root: Path) -> dict[str, bytes]:
    skip = {"data.yaml", "dataset.yaml"}  # they name the folder itself
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def test_same_seed_same_bytes(assets, tmp_path):
    cfg = small(images=6, format="yolo-seg")
    a = build_dataset(list(assets.values()), tmp_path / "a", cfg)
    b = build_dataset(list(assets.values()), tmp_path / "b", cfg)
    c = build_dataset(list(assets.values()), tmp_path / "c", dataclasses.replace(cfg, seed=4))
    fa, fb, fc = _files(a.out), _files(b.out), _files(c.out)
    assert len(fa) == 3 * 6 and fa == fb
    assert fa.keys() == fc.keys() and all(fa[k] != fc[k] for k in fa if k.startswith("images"))
    # The resolved settings are saved, and loading them back reproduces the dataset.
    from text3d.cli import main

    saved = a.out / "dataset.yaml"
    assert (
        main(
            [
                "dataset",
                *map(str, assets.values()),
                "--out",
                str(tmp_path / "d"),
                "--config",
                str(saved),
                "--quiet",
            ]
        )
        == 0
    )
    assert _files(tmp_path / "d") == fa


def test_nothing_is_half_written(assets, tmp_path):
    def stop(done, total, image):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset(list(assets.values()), tmp_path / "out", small(images=6), callback=stop)
    assert list(tmp_path.iterdir()) == []


def _cli(capsys, *argv) -> tuple[int, str]:
    from text3d.cli import main

    code = main(["dataset", *map(str, argv), "--quiet"])
    return code, capsys.readouterr().err


def test_bad_input_one_line_each(assets, tmp_path, capsys):
    faceless = tmp_path / "points.obj"
    faceless.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    stl = tmp_path / "shape.stl"
    stl.write_text("solid x\nendsolid x\n")
    classes = tmp_path / "classes.yaml"
    classes.write_text("ring: donut\ncone: cone\n")
    out = tmp_path / "out"
    ring, cone, capsule = assets["ring"], assets["cone"], assets["capsule"]
    cases = {
        "no assets": ((), "no assets given"),
        "no faces": ((faceless,), "has no faces"),
        "unknown asset format": ((stl,), "unknown format"),
        "unknown dataset format": ((ring, "--format", "voc"), "--format must be one of yolo, yolo-seg, coco"),
        "val": ((ring, "--val", "1.5"), "--val must be a number in [0, 1)"),
        "classes": ((ring, cone, capsule, "--classes", classes), "has no entry for asset"),
        "missing": ((tmp_path / "nope.glb",), "does not exist"),
        "target": ((ring, "--target", "occlusion=1.7"), "occlusion must be in [0, 1]"),
        "device": ((ring, "--device", "gpu0"), "--device must be auto, cpu, cuda or cuda:N"),
        "setting": ((ring, "--set", "scene.objects=[3,1]"), "scene.objects must be two numbers"),
    }
    for name, (args, words) in cases.items():
        code, err = _cli(capsys, *args, "--out", out)
        assert code == 2, name
        assert err.count("\n") == 1 and words in err and "Traceback" not in err, (name, err)
    assert not out.exists()
    # A known class mapping works and several assets may share a class.
    classes.write_text("ring: toy\ncone: toy\ncapsule: pill\n")
    code, _ = _cli(
        capsys, ring, cone, capsule, "--classes", classes, "--out", out, "--images", "2", "--size", "48"
    )
    assert code == 0
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {0: "toy", 1: "pill"}


def test_unreachable_target_is_reported_per_image(assets, tmp_path, capsys):
    """A goal the bounded search cannot meet is one warning line per image, and the run ends."""
    code, err = _cli(
        capsys, assets["cone"], "--out", tmp_path / "o", "--images", "2", "--size", "32", "--target",
        "brightness=1.0", "--set", "search.steps=3", "--set", "search.restarts=0",
    )  # fmt: skip
    assert code == 0
    lines = [line for line in err.splitlines() if line.startswith("warning: image")]
    assert len(lines) == 2 and all("brightness=1 got" in line for line in lines), err
    meta = _metas(tmp_path / "o")
    assert all(m["search"]["reached"] is False and m["search"]["steps"] <= 3 for m in meta)


def test_run_and_batch_folders_name_their_classes(assets, tmp_path):
    """A run folder gives its exported mesh with the prompt as class; a batch folder every completed run."""
    import shutil

    batch = tmp_path / "batch"
    for name, prompt, status, mesh in (
        ("a-red-ring-1", "a red ring", "completed", assets["ring"]),
        ("a-blue-pill-2", "a blue pill", "completed", assets["capsule"]),
        ("a-failed-one-3", "a failed one", "failed", assets["cone"]),
    ):
        run = batch / name
        (run / "mesh").mkdir(parents=True)
        shutil.copy(mesh, run / "mesh" / f"{name}{mesh.suffix}")
        (run / "run.json").write_text(json.dumps({"prompt": prompt, "status": status}))
    from text3d.dataset.assets import load_assets

    meshes, names = load_assets([batch, assets["cone"]])
    assert names == ("a blue pill", "a red ring", "cone") and len(meshes) == 3
    meshes, names = load_assets([batch / "a-red-ring-1"])
    assert names == ("a red ring",) and meshes[0].faces.shape[0] > 0


def test_background_pictures_are_used(assets, tmp_path, capsys):
    """With only picture backgrounds, an image shows the picture where no object is (and an empty folder is
    one clear error)."""
    from PIL import Image

    pics = tmp_path / "pics"
    pics.mkdir()
    Image.new("RGB", (50, 40), (250, 0, 250)).save(pics / "magenta.png")
    cfg = small(images=2, size=48)
    cfg = dataclasses.replace(
        cfg,
        background=dataclasses.replace(cfg.background, procedural=0.0, solid=0.0, folder=str(pics)),
        effects=dataclasses.replace(
            cfg.effects, noise=(0.0, 0.0), blur_probability=0.0, jpeg_quality=(100, 100)
        ),
    )
    out = build_dataset([assets["cone"]], tmp_path / "out", cfg).out
    for meta in _metas(out):
        assert meta["background"]["kind"] == "image"
        ref = id_render(meta)
        rgb = np.asarray(Image.open(out / meta["image"]), dtype=np.float64)
        empty = ref.object_id < 0
        for _ in range(2):  # away from the antialiased silhouettes
            empty &= (
                np.roll(empty, 1, 0) & np.roll(empty, -1, 0) & np.roll(empty, 1, 1) & np.roll(empty, -1, 1)
            )
        assert empty.sum() > 100
        assert np.abs(rgb[empty] - [250, 0, 250]).max() <= 12
    (pics / "magenta.png").unlink()
    code, err = _cli(capsys, assets["cone"], "--out", tmp_path / "o2", "--backgrounds", pics)
    assert code == 2 and "holds no .jpg / .png pictures" in err and err.count("\n") == 1
