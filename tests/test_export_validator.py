"""The Khronos glTF validator reports no errors on text3d's GLB (issue 4, acceptance b).

Needs node and the npm package ``gltf-validator`` (``.ci/install-node-tools.sh`` installs the pinned version into
``.ci/node/node_modules``; ``TEXT3D_NODE_MODULES`` may point elsewhere). Without them the test *fails* with the
install command: a validator that silently does not run would let invalid files through CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import trimesh
from export_fields import wavy_albedo

from text3d.export.exporter import ExportConfig, export_mesh

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).with_name("validate_gltf.cjs")
INSTALL = "bash .ci/install-node-tools.sh  (needs node >= 18 and npm: apt-get install -y nodejs npm)"


def node_modules() -> Path:
    return Path(os.environ.get("TEXT3D_NODE_MODULES", ROOT / ".ci" / "node" / "node_modules"))


def validate(path: Path) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not installed, so the glTF validator cannot run; install it with: {INSTALL}")
    if not (node_modules() / "gltf-validator").is_dir():
        pytest.fail(
            f"the npm package gltf-validator is missing from {node_modules()}; install it with: {INSTALL}"
        )
    env = {**os.environ, "NODE_PATH": str(node_modules())}
    proc = subprocess.run(
        [node, str(RUNNER), str(path)], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.returncode == 0, f"validator did not run: {proc.stderr.strip()}"
    return json.loads(proc.stdout)


@pytest.mark.parametrize("texture_size", [256, 100])
def test_glb_passes_the_khronos_validator(tmp_path, texture_size):
    mesh = trimesh.creation.torus(major_radius=0.4, minor_radius=0.15, major_sections=48, minor_sections=24)
    cfg = ExportConfig(formats=("glb",), texture_size=texture_size, target_faces=0)
    export_mesh(
        np.asarray(mesh.vertices, np.float32),
        mesh.faces,
        wavy_albedo,
        tmp_path,
        "torus",
        cfg,
        extras={"seed": 3},
    )
    report = validate(tmp_path / "torus.glb")
    issues = report["issues"]
    errors = [m for m in issues["messages"] if m["severity"] == 0]
    warnings = [
        f"{m['code']}: {m['message']} ({m.get('pointer', '')})"
        for m in issues["messages"]
        if m["severity"] == 1
    ]
    assert issues["numErrors"] == 0, errors
    print(
        f"gltf-validator {report.get('validatorVersion')}: 0 errors, {issues['numWarnings']} warnings {warnings}"
    )
    info = report["info"]
    assert info["drawCallCount"] == 1
    assert info["totalVertexCount"] > 0 and info["totalTriangleCount"] == len(mesh.faces)
    assert info["materialCount"] == 1 and info["hasTextures"]
    images = [r for r in info["resources"] if "image" in r]
    assert [r["mimeType"] for r in images] == ["image/png"]
    assert images[0]["image"]["width"] == texture_size and images[0]["image"]["transfer"] == "srgb"


def test_validator_catches_a_broken_file(tmp_path):
    """The harness itself works: a GLB with a bad accessor bound is reported as an error."""
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    cfg = ExportConfig(formats=("glb",), texture_size=32, target_faces=0)
    export_mesh(np.asarray(mesh.vertices, np.float32), mesh.faces, wavy_albedo, tmp_path, "ball", cfg)
    data = bytearray((tmp_path / "ball.glb").read_bytes())
    json_len = int.from_bytes(data[12:16], "little")
    doc = json.loads(data[20 : 20 + json_len])
    doc["accessors"][0]["max"] = [0.0, 0.0, 0.0]  # positions exceed the declared maximum
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (json_len - len(text))
    assert len(text) == json_len
    data[20 : 20 + json_len] = text
    (tmp_path / "bad.glb").write_bytes(bytes(data))
    assert validate(tmp_path / "bad.glb")["issues"]["numErrors"] > 0
