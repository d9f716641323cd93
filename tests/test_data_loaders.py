"""Photo-set loaders on data written by the test: transforms.json (Blender, nerfstudio, instant-ngp), COLMAP
(binary and text), frames, normalisation, the RGBE codec, and one clear line for each kind of bad input.

The expected values come from the formats' own definitions written out here (pinhole projection in OpenCV axes,
scipy's quaternions, ``camera_angle_x``), not from the loaders' helpers.
"""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from text3d.cameras import perspective
from text3d.data import (
    Z_UP_TO_Y_UP,
    DataError,
    SceneNormalization,
    load_colmap,
    load_photo_set,
    load_transforms,
    write_transforms,
)
from text3d.hdr import HDRFormatError, read_hdr, write_hdr

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------------------------------ helpers
def look_at_z_up(eye, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Camera-to-world, OpenGL camera axes, Z-up world (as Blender writes NeRF-synthetic)."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    fwd = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, -fwd, eye
    return m


def ring(n: int, radius: float = 4.0, z: float = 1.0, target=(0.0, 0.0, 0.0)) -> list[np.ndarray]:
    return [
        look_at_z_up(np.asarray(target) + (radius * math.cos(a), radius * math.sin(a), z), target)
        for a in np.linspace(0, 2 * math.pi, n, endpoint=False)
    ]


def write_png(path: Path, h: int, w: int, alpha: bool = True) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = RNG.integers(0, 256, (h, w, 4 if alpha else 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def blender_set(root: Path, n_train: int = 4, n_test: int = 2, size: int = 16, angle: float = 0.7) -> dict:
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        frames = []
        for i, m in enumerate(ring(n, z=1.0 + (split == "test"))):
            out[(split, i)] = write_png(root / split / f"r_{i}.png", size, size)
            frames.append({"file_path": f"./{split}/r_{i}", "rotation": 0.0, "transform_matrix": m.tolist()})
        (root / f"transforms_{split}.json").write_text(
            json.dumps({"camera_angle_x": angle, "frames": frames})
        )
    return out


def project_opencv(p_world, c2w_gl, fx, fy, cx, cy, dist=None):
    """Pixel (u, v) of a world point for an OpenGL camera-to-world, through OpenCV's pinhole (+ distortion)."""
    w2c = np.linalg.inv(c2w_gl)
    x, y, z = (w2c @ np.append(p_world, 1.0))[:3] * np.array([1.0, -1.0, -1.0])  # OpenGL -> OpenCV axes
    x, y = x / z, y / z
    if dist is not None:
        k1, k2, p1, p2 = dist
        r2 = x * x + y * y
        rad = 1 + k1 * r2 + k2 * r2 * r2
        x, y = (
            x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y,
        )
    return fx * x + cx, fy * y + cy


def assert_ray_hits(photos, idx: int, u: float, v: float, p_world_text3d: np.ndarray, tol: float = 1e-4):
    o, d = photos.rays(torch.tensor([idx]), torch.tensor([u], dtype=torch.float32), torch.tensor([v]))
    o, d = o[0].double().numpy(), d[0].double().numpy()
    to_p = p_world_text3d - o
    dist = np.linalg.norm(np.cross(to_p, d)) / np.linalg.norm(to_p)
    assert dist < tol, f"ray misses the point by {dist:.2e} (relative)"


# ------------------------------------------------------------------------------------------------------- tests
def test_hdr_round_trip_rle_and_flat(tmp_path):
    for w in (64, 5):  # RLE scanlines, and flat ones (RLE is undefined below width 8)
        img = (RNG.random((7, w, 3)) ** 3 * 50).astype(np.float32)
        img[0, 0] = 0.0
        img[1, 1] = (1e4, 1e-3, 0.5)
        path = write_hdr(tmp_path / f"x{w}.hdr", img)
        back = read_hdr(path)
        assert back.shape == img.shape and back.dtype == np.float32
        peak = img.max(-1, keepdims=True)
        assert np.all(np.abs(back - img) <= peak / 128 + 1e-30)
        assert np.all(back[0, 0] == 0)
    (tmp_path / "bad.hdr").write_bytes(b"P6\n1 1\n255\n\0\0\0")
    with pytest.raises(HDRFormatError, match="not a Radiance"):
        read_hdr(tmp_path / "bad.hdr")


def test_blender_transforms(tmp_path):
    pix = blender_set(tmp_path, size=16, angle=0.7)
    photos = load_photo_set(tmp_path, normalize=False)
    assert photos.format == "blender" and photos.frame.name == "z_up"
    assert photos.counts() == {"train": 4, "val": 0, "test": 2}
    assert photos.images.shape == (6, 16, 16, 3) and photos.masks.shape == (6, 16, 16, 1)
    assert photos.names[0] == "train/r_0.png"
    np.testing.assert_allclose(photos.images[0].numpy(), pix[("train", 0)][..., :3] / 255.0, atol=1e-6)
    np.testing.assert_allclose(photos.masks[0, ..., 0].numpy(), pix[("train", 0)][..., 3] / 255.0, atol=1e-6)
    fx = 0.5 * 16 / math.tan(0.35)
    np.testing.assert_allclose(photos.intrinsics.fx.numpy(), fx, rtol=1e-6)
    np.testing.assert_allclose(photos.intrinsics.cx.numpy(), 8.0)
    # Z-up input -> Y-up world: (x, y, z) -> (x, z, -y), as Blender's glTF exporter does
    raw = ring(4)[1]
    np.testing.assert_allclose(photos.c2w[1].double().numpy(), Z_UP_TO_Y_UP @ raw, atol=1e-6)
    # a world point seen at pixel (u, v) by the input's own pinhole lies on the loaded ray through (u, v)
    p = np.array([0.3, -0.2, 0.4])
    u, v = project_opencv(p, raw, fx, fx, 8.0, 8.0)
    assert_ray_hits(photos, 1, u, v, (Z_UP_TO_Y_UP[:3, :3] @ p))
    # one split file loads that split only
    test_only = load_transforms(tmp_path / "transforms_train.json")
    assert test_only.counts()["train"] == 4 and len(test_only) == 4


def test_intrinsics_projection_matches_perspective_for_a_centred_pinhole(tmp_path):
    blender_set(tmp_path, size=16)
    photos = load_photo_set(tmp_path, normalize=False)
    ours = photos.intrinsics.projection(0.1, 100.0)
    ref = perspective(photos.intrinsics.fovy, 1.0, 0.1, 100.0)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    cams = photos.cameras()
    torch.testing.assert_close(cams.c2w, photos.c2w)


def test_nerfstudio_transforms_distortion_masks_mixed_sizes(tmp_path):
    dist = (-0.05, 0.01, 0.002, -0.001)
    frames = []
    mats = ring(4, radius=3.0)
    (tmp_path / "masks").mkdir()
    for i, m in enumerate(mats):
        h, w = (20, 30) if i < 3 else (10, 15)  # the last image is stored at half size, intrinsics for full
        write_png(tmp_path / "images" / f"f{i}.png", h, w, alpha=False)
        Image.fromarray(np.full((h, w), 255 * (i % 2), np.uint8)).save(tmp_path / "masks" / f"f{i}.png")
        frames.append(
            {
                "file_path": f"images/f{i}.png",
                "transform_matrix": m.tolist(),
                "fl_x": 25.0 + i,
                "fl_y": 26.0 + i,
                "cx": 14.0,
                "cy": 9.5,
                "w": 30,
                "h": 20,
            }
        )
    doc = {
        "camera_model": "OPENCV",
        **dict(zip(("k1", "k2", "p1", "p2"), dist, strict=True)),
        "frames": frames,
        "test_filenames": ["images/f2.png"],
    }
    (tmp_path / "transforms.json").write_text(json.dumps(doc))
    photos = load_photo_set(tmp_path, normalize=False)
    assert photos.format == "nerfstudio"
    assert photos.images.shape == (4, 20, 30, 3) and photos.masks is not None
    assert photos.splits == ["train", "train", "test", "train"]
    assert float(photos.masks[1].min()) == 1.0 and float(photos.masks[0].max()) == 0.0
    np.testing.assert_allclose(photos.intrinsics.fx.numpy(), [25, 26, 27, 28])
    np.testing.assert_allclose(photos.intrinsics.distortion[0].numpy(), dist, rtol=1e-6)
    # a point projected with the OpenCV model (distortion included) lies on the loaded ray
    p = np.array([0.2, 0.3, -0.1])
    for i in (0, 3):
        u, v = project_opencv(p, mats[i], 25.0 + i, 26.0 + i, 14.0, 9.5, dist)
        assert_ray_hits(photos, i, u, v, Z_UP_TO_Y_UP[:3, :3] @ p, tol=1e-5)
    with pytest.raises(DataError, match="off-centre principal point"):
        photos.cameras()


def test_instant_ngp_box_and_write_transforms_round_trip(tmp_path):
    mats = ring(5, radius=2.0, target=(0.5, 0.0, 0.0))
    frames = []
    for i, m in enumerate(mats):
        write_png(tmp_path / "images" / f"{i:03d}.png", 12, 12)
        frames.append({"file_path": f"images/{i:03d}", "transform_matrix": m.tolist()})
    doc = {"fl_x": 10.0, "fl_y": 10.0, "cx": 6.0, "cy": 6.0, "w": 12, "h": 12, "aabb_scale": 4, "scale": 0.5,
           "offset": [0.5, 0.5, 0.5], "frames": frames}  # fmt: skip
    (tmp_path / "transforms.json").write_text(json.dumps(doc))
    photos = load_photo_set(tmp_path)
    assert photos.format == "instant-ngp" and photos.meta["aabb_scale"] == 4
    assert photos.normalization.source == "box"  # instant-ngp's unit cube: [-1, 1]^3 in the input's world
    assert photos.normalization.scale == pytest.approx(0.9)
    path = write_transforms(tmp_path / "out" / "transforms.json", photos)
    again = json.loads(path.read_text())
    for i, m in enumerate(mats):
        np.testing.assert_allclose(np.asarray(again["frames"][i]["transform_matrix"]), m, atol=1e-5)
    # and placing a point back: input -> world -> normalised -> placement("input") == glTF view of the input
    p_in = np.array([0.1, 0.2, 0.3, 1.0])
    p_norm = photos.normalization.matrix() @ photos.frame.to_world_matrix @ p_in
    np.testing.assert_allclose(photos.placement_matrix("input") @ p_norm, Z_UP_TO_Y_UP @ p_in, atol=1e-12)


def _colmap_scene(n=4):
    """Poses (world-to-camera quaternions, OpenCV) of cameras on a ring looking at the origin, and 3D points."""
    cams = []
    for a in np.linspace(0, 2 * math.pi, n, endpoint=False):
        c = np.array([3 * math.cos(a), 0.5, 3 * math.sin(a)])
        z = -c / np.linalg.norm(c)  # OpenCV: looks down +z
        x = np.cross([0.0, -1.0, 0.0], z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        r_wc = np.stack([x, y, z])  # rows: camera axes in world -> world-to-camera rotation
        qx, qy, qz, qw = Rotation.from_matrix(r_wc).as_quat()
        cams.append(((qw, qx, qy, qz), tuple(-r_wc @ c), r_wc, c))
    pts = RNG.normal(size=(40, 3)) * 0.3
    return cams, pts


def _txt(values) -> str:
    """Exact decimal text of floats, as COLMAP writes them (``repr`` of a numpy 2 scalar would add its type)."""
    return " ".join(repr(float(v)) for v in values)


def _write_colmap(
    root: Path, binary: bool, cams, pts, model=("OPENCV", (20.0, 21.0, 15.5, 10.0, 0.01, 0.0, 0.0, 0.0))
):
    sparse = root / "sparse" / "0"
    sparse.mkdir(parents=True)
    for i in range(len(cams)):
        write_png(root / "images" / f"img{i}.png", 20, 30, alpha=False)
    name, params = model
    model_id = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "OPENCV": 4, "OPENCV_FISHEYE": 5}[name]
    if binary:
        b = (
            struct.pack("<Q", 1)
            + struct.pack("<iiQQ", 7, model_id, 30, 20)
            + struct.pack(f"<{len(params)}d", *params)
        )
        (sparse / "cameras.bin").write_bytes(b)
        b = struct.pack("<Q", len(cams))
        for i, (q, t, _, _) in enumerate(cams):
            b += struct.pack("<idddddddi", 100 + i, *q, *t, 7) + f"img{i}.png".encode() + b"\0"
            b += struct.pack("<Q", 2) + struct.pack("<ddq", 1.0, 2.0, -1) + struct.pack("<ddq", 3.0, 4.0, 5)
        (sparse / "images.bin").write_bytes(b)
        b = struct.pack("<Q", len(pts))
        for j, p in enumerate(pts):
            b += (
                struct.pack("<QdddBBBd", j + 1, *p, 10, 20, 30, 0.5)
                + struct.pack("<Q", 1)
                + struct.pack("<ii", 1, 0)
            )
        (sparse / "points3D.bin").write_bytes(b)
    else:
        (sparse / "cameras.txt").write_text(f"# Camera list\n7 {name} 30 20 {' '.join(map(str, params))}\n")
        lines = ["# Image list"]
        for i, (q, t, _, _) in enumerate(cams):
            lines += [f"{100 + i} {_txt(q)} {_txt(t)} 7 img{i}.png", ""]
        (sparse / "images.txt").write_text("\n".join(lines) + "\n")
        (sparse / "points3D.txt").write_text(
            "\n".join(f"{j + 1} {_txt(p)} 10 20 30 0.5 1 0" for j, p in enumerate(pts)) + "\n"
        )


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_binary_and_text(tmp_path, binary):
    cams, pts = _colmap_scene()
    _write_colmap(tmp_path, binary, cams, pts)
    photos = load_colmap(tmp_path, orient="none")
    assert photos.format == "colmap" and len(photos) == 4 and photos.names[0] == "img0.png"
    np.testing.assert_allclose(photos.points.double().numpy(), pts, atol=1e-6)
    np.testing.assert_allclose(photos.intrinsics.distortion[:, 0].numpy(), 0.01)
    for i, (_, t, r_wc, centre) in enumerate(cams):
        np.testing.assert_allclose(photos.c2w[i, :3, 3].double().numpy(), centre, atol=1e-5)
        # COLMAP's own projection (X_cam = R X + t, OpenCV pinhole + k1) vs the loaded ray through that pixel
        x = r_wc @ pts[0] + np.asarray(t)
        xn, yn = x[0] / x[2], x[1] / x[2]
        rad = 1 + 0.01 * (xn * xn + yn * yn)
        u, v = 20.0 * xn * rad + 15.5, 21.0 * yn * rad + 10.0
        assert_ray_hits(photos, i, u, v, pts[0], tol=1e-5)
    # default: the cameras' mean up turned to +Y for training, exports still in COLMAP's coordinates
    upright = load_photo_set(tmp_path)
    assert upright.normalization.source == "points"
    mean_up = upright.c2w[:, :3, 1].mean(0)
    assert float(mean_up[1]) / float(mean_up.norm()) > 0.999
    p_norm = upright.normalization.apply_points(
        torch.from_numpy(upright.frame.to_world_matrix[:3, :3] @ pts[3]).float()[None]
    )[0]
    back = upright.placement_matrix("input") @ np.append(p_norm.double().numpy(), 1.0)
    np.testing.assert_allclose(back[:3], pts[3], atol=1e-5)


def test_normalization_from_cameras_centres_the_look_at_point():
    target = np.array([1.0, 2.0, 3.0])
    mats = np.stack([Z_UP_TO_Y_UP @ m for m in ring(8, radius=4.0, z=1.5, target=(1.0, -3.0, 2.0))])
    c2w = torch.from_numpy(mats).float()
    from text3d.data import compute_normalization

    norm = compute_normalization(c2w, torch.full((8,), 0.3), bound=1.0, margin=0.1)
    assert norm.source == "cameras"
    np.testing.assert_allclose(
        norm.apply_points(torch.tensor(target, dtype=torch.float64)[None])[0], 0, atol=1e-5
    )
    dist = math.sqrt(16 + 1.5**2)
    assert norm.scale == pytest.approx(0.9 / (dist * math.sin(0.3)), rel=1e-4)
    back = SceneNormalization.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_allclose(back.matrix() @ back.inverse_matrix(), np.eye(4), atol=1e-12)
    moved = norm.apply_c2w(c2w)
    torch.testing.assert_close(norm.invert_c2w(moved), c2w)


# ----------------------------------------------------------------------------------------------- bad input
def _single(tmp_path: Path, frames: list, top: dict | None = None, n_images: int = 4, size=(8, 8)):
    for i in range(n_images):
        write_png(tmp_path / "images" / f"{i}.png", *size)
    (tmp_path / "transforms.json").write_text(
        json.dumps({**(top or {"camera_angle_x": 0.8}), "frames": frames})
    )
    return tmp_path


def _frames(n=4, **override):
    out = [{"file_path": f"images/{i}", "transform_matrix": m.tolist()} for i, m in enumerate(ring(n))]
    for k, v in override.items():
        i, key = k.split("__")
        out[int(i[1:])][key] = v
    return out


def _raises_one_line(path, match):
    with pytest.raises(DataError, match=match) as info:
        load_photo_set(path)
    assert "\n" not in str(info.value)


def test_bad_transforms_fields(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "transforms.json").write_text('{"camera_angle_x": 0.5}')
    _raises_one_line(tmp_path / "a", "no 'frames'")
    frames = _frames()
    del frames[2]["transform_matrix"]
    _raises_one_line(_single(tmp_path / "b", frames), "frame 2 .*no 'transform_matrix'")
    _raises_one_line(_single(tmp_path / "c", _frames(), top={"w": 8}), "no focal length")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "transforms.json").write_text('{"frames": [}')
    _raises_one_line(tmp_path / "d", "not valid JSON")


def test_bad_matrices(tmp_path):
    nan = ring(4)[1].tolist()
    nan[0][3] = float("nan")
    _raises_one_line(_single(tmp_path / "a", _frames(f1__transform_matrix=nan)), "frame 1 .*NaN")
    flat = np.eye(4)
    flat[2, 2] = 0.0
    _raises_one_line(
        _single(tmp_path / "b", _frames(f3__transform_matrix=flat.tolist())), "frame 3 .*not invertible"
    )
    _raises_one_line(_single(tmp_path / "c", _frames(f0__transform_matrix=[[1, 0], [0, 1]])), "must be 4x4")
    scaled = (np.diag([2.0, 2.0, 2.0, 1.0]) @ ring(4)[0]).tolist()
    _raises_one_line(_single(tmp_path / "d", _frames(f0__transform_matrix=scaled)), "not orthonormal")


def test_missing_and_unreadable_images(tmp_path):
    root = _single(tmp_path / "a", _frames())
    (root / "images" / "2.png").unlink()
    _raises_one_line(root, r"frame 2 \(images/2\): image not found")
    root = _single(tmp_path / "b", _frames())
    (root / "images" / "1.png").write_bytes(b"not a png at all")
    _raises_one_line(root, r"cannot read image .*1\.png")


def test_mixed_sizes_need_per_frame_intrinsics(tmp_path):
    root = _single(tmp_path, _frames())
    write_png(root / "images" / "3.png", 16, 16)
    _raises_one_line(root, r"mixed sizes \(8x8 for images/0.png, 16x16 for images/3.png\)")


def test_too_few_images_and_empty_folders(tmp_path):
    _raises_one_line(_single(tmp_path / "a", _frames(2), n_images=2), "2 training image.*at least 3")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    _raises_one_line(tmp_path / "empty", "no images, no transforms.json and no COLMAP model")
    write_png(tmp_path / "plain" / "images" / "a.png", 8, 8)
    _raises_one_line(tmp_path / "plain", "1 image.*structure-from-motion needs at least 3|needs pycolmap")
    _raises_one_line(tmp_path / "nowhere", "no such file or folder")


def test_unsupported_colmap_camera_model(tmp_path):
    cams, pts = _colmap_scene(3)
    _write_colmap(tmp_path, True, cams, pts, model=("OPENCV_FISHEYE", (20.0, 20.0, 15.0, 10.0, 0.1, 0, 0, 0)))
    _raises_one_line(tmp_path, "camera model OPENCV_FISHEYE is not supported")


@pytest.mark.skipif(importlib.util.find_spec("pycolmap") is None, reason="pycolmap not installed")
def test_sfm_registering_too_few_images_names_them(tmp_path):
    """Plain photos go to structure-from-motion; unrelated noise images register nothing: one line, with counts."""
    for i in range(4):
        write_png(tmp_path / "images" / f"p{i}.png", 48, 48, alpha=False)
    _raises_one_line(tmp_path, r"structure-from-motion registered (0|only \d) of 4 images")


def test_the_fit_summary_counts_registered_photos_and_names_the_rest():
    from text3d.cli import sfm_summary

    line = sfm_summary({"registered": 38, "unregistered": ["a.png", "b.png"], "points": 1200})
    assert line == (
        "structure-from-motion registered 38 of 40 photos (1200 points); not registered (not fitted): a.png, b.png"
    )
    assert sfm_summary({"registered": 4, "unregistered": [], "points": 9}).endswith(
        "4 of 4 photos (9 points)"
    )
