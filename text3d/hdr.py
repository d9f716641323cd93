"""Radiance ``.hdr`` (RGBE) images: read and write, in numpy, with no plugin downloads.

imageio's FreeImage plugin fetches a shared library at run time, which tests and offline machines cannot do, and
OpenCV is not a dependency; the format is small enough to own. Pixels are linear radiance, ``float32 [H, W, 3]``,
row 0 at the top (the ``-Y H +X W`` orientation every writer uses). An equirectangular environment map is 2:1.

Encoding (Greg Ward's RGBE): a shared exponent ``e`` from the largest channel ``m = mant * 2**exp`` (``mant`` in
[0.5, 1)), mantissas ``floor(c * 256 * mant / m)``, stored byte ``exp + 128``. Decoding adds half a step
(``(byte + 0.5) * 2**(e - 136)``), as Radiance does, so the round trip is unbiased; the relative error of the
largest channel is below 1/256. Scanlines are written with the "new" run-length encoding (readers such as Blender's
and OpenImageIO's expect it for widths 8..32767), as literal runs, which are always valid.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from text3d.errors import Text3DError
from text3d.io import write_bytes

_MAGICS = (b"#?RADIANCE", b"#?RGBE")
ENV_MAX_RADIANCE = 1e30
"""Larger values are treated as overflow (an RGBE exponent byte of 255 decodes to ~1.7e38): no real light."""


class HDRFormatError(Text3DError, ValueError):
    """The file is not a Radiance RGBE image this reader understands, or not a usable environment map."""


def encode_rgbe(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` float radiance (negative values clamp to 0) -> ``[..., 4]`` uint8 RGBE."""
    rgb = np.clip(np.nan_to_num(np.asarray(rgb, np.float64), nan=0.0, posinf=0.0), 0.0, None)
    m = rgb.max(axis=-1)
    mant, exp = np.frexp(m)
    valid = m > 1e-32
    scale = np.where(valid, mant * 256.0 / np.where(valid, m, 1.0), 0.0)
    out = np.zeros(rgb.shape[:-1] + (4,), np.uint8)
    out[..., :3] = np.clip(np.floor(rgb * scale[..., None]), 0, 255).astype(np.uint8)
    out[..., 3] = np.where(valid, np.clip(exp + 128, 0, 255), 0).astype(np.uint8)
    return out


def decode_rgbe(rgbe: np.ndarray) -> np.ndarray:
    """``[..., 4]`` uint8 RGBE -> ``[..., 3]`` float32 radiance."""
    rgbe = np.asarray(rgbe)
    e = rgbe[..., 3].astype(np.int32)
    f = np.where(e > 0, np.ldexp(1.0, e - 136), 0.0)
    return ((rgbe[..., :3].astype(np.float64) + 0.5) * f[..., None]).astype(np.float32)


def _rle_scanline(line: np.ndarray) -> bytes:
    """One ``[W, 4]`` uint8 scanline in new-style RLE: header, then each channel as literal runs of <= 128."""
    w = line.shape[0]
    parts = [bytes((2, 2, w >> 8, w & 0xFF))]
    for c in range(4):
        chan = line[:, c].tobytes()
        for start in range(0, w, 128):
            chunk = chan[start : start + 128]
            parts.append(bytes((len(chunk),)) + chunk)
    return b"".join(parts)


def write_hdr(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a ``[H, W, 3]`` linear float image as a Radiance ``.hdr`` file (atomically)."""
    return write_bytes(path, hdr_bytes(image))


def hdr_bytes(image: np.ndarray) -> bytes:
    """A ``[H, W, 3]`` linear float image as the bytes of a Radiance ``.hdr`` file."""
    img = np.asarray(image, np.float32)
    if img.ndim != 3 or img.shape[-1] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"expected an [H, W, 3] image, got shape {img.shape}")
    h, w = img.shape[:2]
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\nEXPOSURE=1.0\n\n-Y {h} +X {w}\n".encode("ascii")
    rgbe = encode_rgbe(img)
    if 8 <= w < 32768:
        body = b"".join(_rle_scanline(rgbe[y]) for y in range(h))
    else:  # RLE is undefined outside this range: flat pixels
        body = rgbe.tobytes()
    return header + body


def read_hdr(path: str | os.PathLike) -> np.ndarray:
    """Read a Radiance ``.hdr`` file into ``float32 [H, W, 3]`` linear radiance, row 0 at the top.

    Handles flat and new-style RLE scanlines in the ``-Y H +X W`` orientation; raises :class:`HDRFormatError`
    with one line for anything else (old-style RLE, other orientations, truncated data).
    """
    data = Path(path).read_bytes()
    if not data.startswith(_MAGICS):
        raise HDRFormatError(f"{path}: not a Radiance .hdr file (no '#?RADIANCE' header)")
    pos, fmt = 0, None
    while True:  # header lines until the empty line
        end = data.find(b"\n", pos)
        if end < 0:
            raise HDRFormatError(f"{path}: header has no end")
        line = data[pos:end].strip()
        pos = end + 1
        if not line:
            break
        if line.startswith(b"FORMAT="):
            fmt = line[7:].decode("ascii", "replace")
    if fmt not in (None, "32-bit_rle_rgbe"):
        raise HDRFormatError(f"{path}: pixel format {fmt!r} is not supported (only 32-bit_rle_rgbe)")
    end = data.find(b"\n", pos)
    res = data[pos:end].split()
    pos = end + 1
    if len(res) != 4 or res[0] != b"-Y" or res[2] != b"+X":
        raise HDRFormatError(
            f"{path}: orientation {b' '.join(res).decode('ascii', 'replace')!r} is not supported"
        )
    h, w = int(res[1]), int(res[3])
    out = np.empty((h, w, 4), np.uint8)
    buf = memoryview(data)
    for y in range(h):
        if pos + 4 > len(data):
            raise HDRFormatError(f"{path}: truncated at scanline {y} of {h}")
        if 8 <= w < 32768 and data[pos] == 2 and data[pos + 1] == 2 and not data[pos + 2] & 0x80:
            if (data[pos + 2] << 8 | data[pos + 3]) != w:
                raise HDRFormatError(f"{path}: scanline {y} has the wrong width")
            pos += 4
            for c in range(4):
                x = 0
                while x < w:
                    if pos >= len(data):
                        raise HDRFormatError(f"{path}: truncated at scanline {y} of {h}")
                    n = data[pos]
                    pos += 1
                    if n > 128:  # a run of one value
                        n -= 128
                        if x + n > w:
                            raise HDRFormatError(f"{path}: bad run length at scanline {y}")
                        out[y, x : x + n, c] = data[pos]
                        pos += 1
                    else:
                        if n == 0 or x + n > w or pos + n > len(data):
                            raise HDRFormatError(f"{path}: bad run length at scanline {y}")
                        out[y, x : x + n, c] = np.frombuffer(buf[pos : pos + n], np.uint8)
                        pos += n
                    x += n
        else:
            if data[pos] == 1 and data[pos + 1] == 1 and data[pos + 2] == 1:
                raise HDRFormatError(f"{path}: old-style run-length encoding is not supported")
            n = w * 4
            if pos + n > len(data):
                raise HDRFormatError(f"{path}: truncated at scanline {y} of {h}")
            out[y] = np.frombuffer(buf[pos : pos + n], np.uint8).reshape(w, 4)
            pos += n
    return decode_rgbe(out)


def check_environment(image: np.ndarray, name: str = "environment map") -> np.ndarray:
    """Validate an equirectangular environment map: ``float32 [H, 2H, 3]``, finite, non-negative radiance.

    Raises :class:`HDRFormatError` with one line naming ``name`` for the wrong shape or aspect ratio (an
    equirectangular map spans 360 x 180 degrees, so its width is exactly twice its height), NaN, Inf or
    overflowing values, or negative radiance.
    """
    img = np.asarray(image, np.float32)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise HDRFormatError(f"{name}: expected an [H, W, 3] image, got shape {tuple(img.shape)}")
    h, w = img.shape[:2]
    if w != 2 * h or h < 2:
        raise HDRFormatError(
            f"{name}: {w}x{h} is not an equirectangular environment map (width must be twice the height)"
        )
    bad = ~np.isfinite(img) | (np.abs(img) > ENV_MAX_RADIANCE)
    if bad.any():
        raise HDRFormatError(
            f"{name}: holds {int(bad.any(-1).sum())} NaN/Inf pixels (the light must be finite)"
        )
    if (img < 0).any():
        raise HDRFormatError(f"{name}: holds negative radiance")
    return img


def read_environment(path: str | os.PathLike) -> np.ndarray:
    """Read and validate an equirectangular environment ``.hdr`` (see :func:`check_environment`); one-line
    :class:`HDRFormatError` for a missing file, a file that is not a Radiance ``.hdr``, or a bad map."""
    p = Path(path)
    if not p.is_file():
        raise HDRFormatError(f"{path}: environment map not found")
    try:
        img = read_hdr(p)
    except HDRFormatError:
        raise
    except (ValueError, IndexError) as err:  # malformed numbers in the resolution line and the like
        raise HDRFormatError(f"{path}: not a readable Radiance .hdr file ({err})") from None
    return check_environment(img, str(path))


def write_environment(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Validate (:func:`check_environment`) and write an environment map; nothing is written if it is bad."""
    return write_hdr(path, check_environment(image, str(path)))
