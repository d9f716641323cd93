"""Uploaded files become a photo folder the real loader reads; nothing lands outside it; bad uploads are one line."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from test_data_loaders import _frames, _single

from text3d.app.uploads import UploadError, stage_photos
from text3d.data import load_photo_set


def _flat(src: Path, dest: Path) -> list[Path]:
    """What a browser upload delivers: every file under its bare name, folders lost."""
    dest.mkdir(parents=True)
    out = []
    for f in sorted(src.rglob("*")):
        if f.is_file():
            out.append(Path(shutil.copyfile(f, dest / f.name)))
    return out


def test_loose_files_are_placed_where_transforms_json_names_them(tmp_path):
    frames = _frames()
    for f in frames:  # Blender style: no extension, nested folder
        f["file_path"] = "./train/" + Path(f["file_path"]).name
    src = _single(tmp_path / "src", frames)
    (src / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": frames}))
    folder = stage_photos(_flat(src, tmp_path / "up"), tmp_path / "staged")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png")) == [
        f"train/{i}.png" for i in range(4)
    ]
    photos = load_photo_set(folder)
    assert photos.counts()["train"] + photos.counts()["test"] == 4


def test_plain_photos_go_to_images_and_a_zip_keeps_its_layout(tmp_path):
    src = _single(tmp_path / "src", _frames())
    plain = [p for p in _flat(src, tmp_path / "up") if p.suffix == ".png"]
    folder = stage_photos(plain, tmp_path / "plain")
    assert sorted(p.name for p in (folder / "images").iterdir()) == [f"{i}.png" for i in range(4)]

    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in src.rglob("*"):
            if f.is_file():
                zf.write(f, "myset/" + f.relative_to(src).as_posix())
    folder = stage_photos([archive], tmp_path / "zipped")
    assert folder == tmp_path / "zipped" / "myset"  # the single top folder is stepped into
    assert load_photo_set(folder).counts()["train"] >= 3


def _zip_with(path: Path, name: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(
            zipfile.ZipInfo(name), b"x"
        )  # ZipInfo keeps the name as given (writestr would strip a "/")
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: [], "no files"),
        (lambda t: [_zip_with(t / "a.zip", "../evil.png")], "points outside the upload"),
        (lambda t: [_zip_with(t / "a.zip", str(t / "abs-evil.png"))], "points outside the upload"),
        (lambda t: [_zip_with(t / "a.zip", "ok.png"), _zip_with(t / "b.png", "x")], "not both"),
        (lambda t: [(t / "bad.zip", (t / "bad.zip").write_bytes(b"PK nope"))[0]], "not a readable zip"),
        (lambda t: [(t / "notes.txt", (t / "notes.txt").write_text("hi"))[0]], "cannot use 'notes.txt'"),
    ],
)
def test_bad_uploads_are_one_line_and_write_nothing_outside(tmp_path, make, message):
    files = make(tmp_path)
    dest = tmp_path / "staged"
    with pytest.raises(UploadError, match=message) as info:
        stage_photos(files, dest)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "abs-evil.png").exists()


def test_same_name_in_two_folders_asks_for_a_zip_and_escaping_file_paths_are_refused(tmp_path):
    frames = _frames()
    frames[0]["file_path"], frames[1]["file_path"] = "train/r_0", "test/r_0"
    src = _single(tmp_path / "src", frames)
    with pytest.raises(UploadError, match="two images are named 'r_0'.*one .zip"):
        stage_photos(_flat(src, tmp_path / "up"), tmp_path / "staged")
    frames = _frames()
    frames[0]["file_path"] = "../../outside"
    src = _single(tmp_path / "src2", frames)
    with pytest.raises(UploadError, match="points outside the upload"):
        stage_photos(_flat(src, tmp_path / "up2"), tmp_path / "staged2")
