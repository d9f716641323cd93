"""Uploaded files -> a photo folder that ``text3d fit`` reads (the web app's "From photos" tab).

A browser uploads loose files (their folders are lost: every file arrives under its bare name) or one zip. Loose
images are placed where the uploaded ``transforms*.json`` says they are (matched by name, with or without the
extension), so a Blender/nerfstudio set survives the flattening; images it does not name, or all images when there
is no transforms file, go to ``images/`` for structure-from-motion. A zip keeps its own layout (a single top folder
is stepped into). Nothing is written outside ``dest``: absolute paths, ``..`` and links in a zip or a transforms
file are refused, as are zips that would unpack to more than :data:`MAX_BYTES`.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from text3d.errors import Text3DError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MAX_BYTES = 4 << 30
"""Largest unpacked upload (4 GiB)."""
MAX_FILES = 20_000


class UploadError(Text3DError):
    """The uploaded files cannot be read as a photo set; one line saying what to upload instead."""


def _inside(rel: str, what: str) -> PurePosixPath:
    """``rel`` as a relative path that stays inside its folder, or :class:`UploadError`."""
    path = PurePosixPath(rel.replace("\\", "/"))
    parts = [p for p in path.parts if p not in ("", ".")]
    if path.is_absolute() or ".." in parts or not parts:
        raise UploadError(f"{what} {rel!r} points outside the upload; use paths relative to transforms.json")
    return PurePosixPath(*parts)


def _unzip(archive: Path, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) > MAX_FILES:
                raise UploadError(
                    f"{archive.name} holds {len(members)} files; at most {MAX_FILES} are accepted"
                )
            if sum(m.file_size for m in members) > MAX_BYTES:
                raise UploadError(
                    f"{archive.name} unpacks to more than {MAX_BYTES >> 30} GiB; upload fewer photos"
                )
            for m in members:
                if (m.external_attr >> 16) & 0o170000 == 0o120000:
                    raise UploadError(f"{archive.name} holds a link ({m.filename}); zip the files themselves")
                rel = _inside(m.filename, f"{archive.name}: member")
                if rel.parts[0] == "__MACOSX":
                    continue
                target = dest.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    except zipfile.BadZipFile as err:
        raise UploadError(f"{archive.name} is not a readable zip file ({err})") from None
    entries = [p for p in dest.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def _referenced(transforms: Sequence[Path]) -> dict[str, PurePosixPath]:
    """Image name (and stem) -> where the transforms files say it lives."""
    where: dict[str, PurePosixPath] = {}
    for path in transforms:
        try:
            frames = json.loads(path.read_text(encoding="utf-8")).get("frames", [])
        except (OSError, ValueError, AttributeError) as err:
            raise UploadError(f"{path.name} is not a readable transforms file ({err})") from None
        for frame in frames if isinstance(frames, list) else []:
            rel = frame.get("file_path") if isinstance(frame, dict) else None
            if not isinstance(rel, str):
                continue  # the loader names the frame and what is missing
            rel_path = _inside(rel, f"{path.name}: file_path")
            for key in {rel_path.name, rel_path.stem}:
                if key in where and where[key] != rel_path:
                    raise UploadError(
                        f"two images are named {key!r} ({where[key]} and {rel_path}); loose uploads lose their "
                        "folders, so upload the set as one .zip instead"
                    )
                where[key] = rel_path
    return where


def stage_photos(files: Sequence[str | Path], dest: str | Path) -> Path:
    """Lay out uploaded ``files`` under ``dest`` (created) as a folder :func:`text3d.data.load_photo_set` reads.

    Returns:
        the folder to fit (``dest``, or the zip's single top folder inside it).

    Raises:
        UploadError: nothing uploaded, a zip mixed with other files, an unreadable zip or transforms file, a file
            that is neither an image nor a transforms file, or a path that would leave ``dest``.
    """
    paths = [Path(f) for f in files if f]
    if not paths:
        raise UploadError(
            "no files: upload photos (PNG or JPEG), optionally with their transforms.json, or one .zip"
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    zips = [p for p in paths if p.suffix.lower() == ".zip"]
    if zips:
        if len(paths) > 1:
            raise UploadError("upload either one .zip or loose files, not both")
        return _unzip(zips[0], dest)
    transforms = [p for p in paths if p.suffix.lower() == ".json"]
    images = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]
    other = [p.name for p in paths if p not in transforms and p not in images]
    if other:
        raise UploadError(
            f"cannot use {other[0]!r}: upload images ({', '.join(IMAGE_SUFFIXES)}), transforms*.json or one .zip"
        )
    if not images:
        raise UploadError("no images among the uploaded files; add the photos themselves")
    for t in transforms:
        shutil.copyfile(t, dest / t.name)
    where = _referenced(transforms)
    for image in images:
        rel = where.get(image.name) or where.get(image.stem)
        if rel is None:
            target = dest / "images" / image.name
        else:
            target = dest.joinpath(*rel.parts)
            if not rel.suffix:
                target = target.with_name(target.name + image.suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, target)
    return dest
