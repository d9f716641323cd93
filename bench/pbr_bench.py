"""PBR materials and light from Cycles photos: relighting, material recovery and known light (issue 15 a-c).

A two-material sphere (rough dielectric lower part with a red-to-blue base colour ramp, smooth gold metal cap) is
rendered by Cycles under the procedural sky (training views) and, from held-out cameras, under a second, different
"studio" environment (relighting ground truth). The materials stage's parts (the true mesh, held fixed, in the fit's
normalised frame; PBR shader; photometric objective on whole photos) are optimised with Adam, then:

(a) the held-out views are rendered under the studio light (never seen) and compared with Cycles (PSNR); the same
    for an albedo-only asset (the photos' colours on the mesh, unlit: today's export, as a renderer shows it);
(b) base colour PSNR after one global least-squares scale, roughness error per part, metallic on the right side
    of 0.5, all at the mesh's vertices against the scene's analytic material (``spec.pbr_ground_truth``);
(c) the same fit with the true sky given (``--env``), base colour PSNR without the scale.

Usage: ``python bench/pbr_bench.py [--size 128] [--steps 600] [--views 24]``; prints one JSON line.
``--end-to-end [--set KEY=VALUE ...]`` fits the mesh as well (``text3d fit --materials pbr``: NeRF, DMTet, materials)
and reports (a) for it: relit PSNR of the held-out cameras, and of the same run's albedo-only DMTet mesh.
``--end-to-end --representation sdf`` starts from an SDF instead of the NeRF (``text3d fit``'s choice for masked
photos); ``--set refine.steps=0`` then puts the materials on the SDF's zero level, with no DMTet stage.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from text3d.data.frames import Z_UP_TO_Y_UP
from text3d.data.load import load_photo_set
from text3d.fields.material import MaterialFieldConfig
from text3d.fields.nerf import BackgroundConfig
from text3d.hdr import read_environment, write_hdr
from text3d.metrics import psnr
from text3d.objectives.photometric import PhotometricConfig, PhotometricObjective
from text3d.recipes.fit import pbr_shader
from text3d.render.pbr import EnvironmentLight, PBRShaderConfig, linear_to_srgb
from text3d.render.shading import UnlitShader
from text3d.representations.mesh import MeshRepresentation, MeshRepresentationConfig
from text3d.scenes.render import render_dataset
from text3d.scenes.spec import (
    CameraRigSpec,
    MaterialSpec,
    MeshSpec,
    RenderSpec,
    SceneSpec,
    WorldSpec,
    pbr_ground_truth,
    studio_hdr,
)
from text3d.views.photos import PhotoViews, PhotoViewsConfig

MATERIAL = MaterialSpec(
    base_color=(0.6, 0.1, 0.05),
    base_color_b=(0.1, 0.3, 0.6),
    texture=None,
    roughness=0.6,
    metallic=0.0,
    ramp_axis=0,
    split_axis=2,
    split_at=0.1,
    upper=(0.9, 0.65, 0.3, 0.2, 1.0),
)


def scene(world: WorldSpec, size: int, views: int, spp: int) -> SceneSpec:
    return SceneSpec(
        mesh=MeshSpec("uv_sphere", size=1.0, smooth=True),
        material=MATERIAL,
        world=world,
        cameras=CameraRigSpec(n_train=views, n_test=4, distance=3.0, fov_deg=30.0),
        render=RenderSpec(size, size, samples=spp, threads=1),
    )


def fit_materials(photos, verts, faces, env_file: str, steps: int, seed: int = 0):
    torch.manual_seed(seed)
    rep = MeshRepresentation(MeshRepresentationConfig(BackgroundConfig(kind="solid", color=(0.0, 0.0, 0.0))))
    rep.verts, rep.faces = verts, faces
    cfg = PBRShaderConfig(material=MaterialFieldConfig())
    shader = pbr_shader(cfg, env_file, bound=1.0)
    views = PhotoViews(photos, PhotoViewsConfig(background=(0.0, 0.0, 0.0), images_per_step=2), mode="images")
    objective = PhotometricObjective(PhotometricConfig(lambda_mask=0.0))
    groups = shader.param_groups()
    opt = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15)
    for step in range(steps):
        vb = views.sample(step, torch.device("cpu"))
        out = rep.render(
            vb.cameras, vb.height, vb.width, shader, shader.sample(step, vb.cameras), training=True
        )
        terms = {**objective(out, vb, step / steps).terms, **shader.regularizers(step)}
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    return rep, shader.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--views", type=int, default=24)
    ap.add_argument("--spp", type=int, default=32)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", default="/tmp/text3d_pbr_bench")
    ap.add_argument(
        "--end-to-end",
        action="store_true",
        help="fit the mesh too (text3d fit --materials pbr), instead of holding Cycles' mesh fixed",
    )
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="fit overrides (--end-to-end)"
    )
    ap.add_argument(
        "--representation", choices=("nerf", "sdf"), default="nerf", help="--end-to-end's geometry"
    )
    args = ap.parse_args()
    if args.end_to_end:
        sets = dict(SDF_END_TO_END) if args.representation == "sdf" else {}
        sets.update(item.split("=", 1) for item in args.set)
        print(json.dumps(end_to_end(args.size, args.views, args.spp, args.steps, args.out, sets)))
    else:
        print(json.dumps(run(args.size, args.views, args.spp, args.steps, args.out)))


END_TO_END = {
    "views.background": "0,0,0",
    "coarse.representation": "nerf",
    "coarse.steps": "800",
    "coarse.rays_per_step": "4096",
    "coarse.nerf.encoding.n_levels": "12",
    "coarse.nerf.encoding.log2_hashmap_size": "16",
    "coarse.nerf.encoding.max_resolution": "512",
    "coarse.optim.network_lr_scale": "1.0",
    "coarse.renderer.n_samples": "64",
    "refine.steps": "300",
    "refine.dmtet.resolution": "128",
    "trainer.progress_bar": "false",
    "trainer.preview_every": "100000",
    "trainer.video_frames": "0",
    "trainer.keep_earlier_stages": "true",
    "export.enabled": "false",
}
"""The end-to-end fit: a NeRF (12 levels, 2^16, finest 512), DMTet on a 128 tet grid, then the materials stage, all
over black (the relighting ground truth is composited over black)."""


SDF_END_TO_END = {"coarse.representation": "sdf", "coarse.steps": "1200", "coarse.rays_per_step": "2048"}
"""``--representation sdf``: fit's SDF (its default settings) at ``bench/sdf_fit_bench.py``'s benchmark length
(1200 steps x 2048 rays), then the same DMTet stage (``--set refine.steps=0``: materials on the SDF's zero level)."""


def end_to_end(size: int, views: int, spp: int, steps: int, out: str, sets: dict[str, str]) -> dict:
    """``text3d fit --materials pbr`` on the training photos, then the held-out cameras relit by the studio light
    against Cycles, beside the same run's albedo-only mesh (its DMTet stage, unlit: what the export without
    materials shows in any light)."""
    from pathlib import Path

    from text3d.config import apply_overrides
    from text3d.fitting import fit
    from text3d.recipes import fit as fit_recipe
    from text3d.recipes.fit import FitConfig
    from text3d.relight import load_materials_stage
    from text3d.training.checkpoint import checkpoint_path, load_weights

    t0 = time.time()
    out_dir = Path(out)
    studio = write_hdr(out_dir / "studio.hdr", studio_hdr())
    train_ds = render_dataset(scene(WorldSpec(kind="sky"), size, views, spp))
    relit_ds = render_dataset(scene(WorldSpec(kind="hdr", hdr_path=str(studio)), size, views, spp))
    relit = load_photo_set(relit_ds.path)
    test = relit.indices("test").tolist()
    gt = relit.composite(torch.zeros(3))[test]
    overrides = {
        **END_TO_END,
        "data": str(train_ds.path),
        "out_dir": str(out_dir / "runs"),
        "device": "cpu",
        "materials": "pbr",
        "material.steps": str(steps),
        **sets,
    }
    cfg = apply_overrides(FitConfig(), overrides)
    run_dir = fit(cfg).run_dir
    cams = relit.subset(test).cameras()

    def mean_psnr(stage) -> float:
        with torch.no_grad():
            img = stage.representation.render(
                cams, relit.height, relit.width, stage.shader, stage.shader.view_state(cams)
            )
        return round(float(np.mean([psnr(a, b) for a, b in zip(img.rgb, gt, strict=True)])), 2)

    relit_psnr = mean_psnr(load_materials_stage(run_dir, env=studio))
    photos = load_photo_set(cfg.data, bound=cfg.bound, margin=cfg.margin, holdout=cfg.holdout)
    torch.manual_seed(cfg.seed)
    stages = fit_recipe.build_stages(cfg, photos)
    mesh_stage = stages[1] if stages[1].name == "refine" else stages[0]  # DMTet, else the SDF itself
    load_weights(mesh_stage, checkpoint_path(run_dir, mesh_stage.name))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "mode": "end to end",
        "size": size,
        "views": views,
        "relit_psnr": relit_psnr,
        "albedo_only_relit_psnr": mean_psnr(mesh_stage.eval()),
        "mesh_stage": mesh_stage.representation.name,
        "held_out_psnr_training_light": metrics["psnr"],
        "overrides": overrides,
        "run_dir": str(run_dir),
        "seconds": round(time.time() - t0, 1),
    }


def run(size: int, views: int, spp: int, steps: int, out: str, full: bool = True) -> dict:
    """The measurements as a dict; ``full=False`` skips the albedo-only and known-light parts (tests)."""
    from pathlib import Path

    args = argparse.Namespace(size=size, views=views, spp=spp, steps=steps)
    t0 = time.time()
    out_dir = Path(out)
    studio = write_hdr(out_dir / "studio.hdr", studio_hdr())
    train_ds = render_dataset(scene(WorldSpec(kind="sky"), args.size, args.views, args.spp))
    relit_ds = render_dataset(
        scene(WorldSpec(kind="hdr", hdr_path=str(studio)), args.size, args.views, args.spp)
    )
    sky_file = str(train_ds.path / "world.hdr")
    photos = load_photo_set(train_ds.path)  # normalised, as the fit sees it
    relit = load_photo_set(relit_ds.path)
    norm = photos.normalization
    import trimesh

    mesh = trimesh.load(train_ds.mesh_path, process=False)
    v_blender = np.asarray(mesh.vertices)
    v = (v_blender @ Z_UP_TO_Y_UP[:3, :3].T) * norm.scale + np.asarray(norm.translation)
    verts, faces = torch.tensor(v, dtype=torch.float32), torch.tensor(np.asarray(mesh.faces))
    gt = pbr_ground_truth(MATERIAL, 1.0, v_blender)
    metal = gt[:, 4] > 0.5
    test = relit.indices("test").tolist()
    black = torch.zeros(3)
    gt_relit = relit.composite(black)[test]
    result = {"size": args.size, "views": args.views, "steps": args.steps}

    def material_scores(shader, scale: bool) -> dict:
        with torch.no_grad():
            m = shader.material(verts)
        base = m.base.double().numpy()
        if scale:  # one global least-squares scale (light and albedo scale trade off)
            base = base * float((base * gt[:, :3]).sum() / max((base * base).sum(), 1e-12))
        srgb = lambda x: linear_to_srgb(torch.tensor(x)).numpy()  # noqa: E731
        mse = float(np.mean((srgb(base) - srgb(gt[:, :3])) ** 2))
        r, mt = m.roughness.numpy(), m.metallic.numpy()
        return {
            "base_psnr": round(-10 * math.log10(max(mse, 1e-12)), 2),
            "roughness_err_dielectric": round(float(np.abs(r[~metal] - gt[~metal, 3]).mean()), 3),
            "roughness_err_metal": round(float(np.abs(r[metal] - gt[metal, 3]).mean()), 3),
            "metallic_correct": round(float(((mt > 0.5) == metal).mean()), 3),
        }

    def relit_psnr(rep, shader) -> float:
        cams = relit.subset(test).cameras()
        with torch.no_grad():
            shader.environment = EnvironmentLight(shader.environment.cfg, read_environment(studio), False)
            out = rep.render(cams, relit.height, relit.width, shader, shader.view_state(cams))
        return round(float(np.mean([psnr(a, b) for a, b in zip(out.rgb, gt_relit, strict=True)])), 2)

    rep, shader = fit_materials(photos, verts, faces, "", args.steps)
    result["learned_light"] = material_scores(shader, scale=True)
    result["relit_psnr"] = relit_psnr(rep, shader)
    if full:
        # albedo-only: the photos' colours as seen under the sky, unlit (today's export)
        result["albedo_only_relit_psnr"] = albedo_only(rep, photos, relit, test, gt_relit)
        _, known = fit_materials(photos, verts, faces, sky_file, args.steps)
        result["known_light"] = material_scores(known, scale=False)
    result["seconds"] = round(time.time() - t0, 1)
    return result


def albedo_only(rep, photos, relit, test, gt_relit) -> float:
    """An albedo-only asset: per-vertex colour = the mean of the training photos' pixels it projects to (the
    lighting of the training views baked in), rendered unlit from the held-out cameras."""

    verts = rep.verts
    cams = photos.subset(photos.indices("train").tolist()).cameras()
    imgs = photos.composite(torch.zeros(3))[photos.indices("train")]
    acc = torch.zeros(verts.shape[0], 3)
    cnt = torch.zeros(verts.shape[0], 1)
    mvp = cams.mvp()
    homo = torch.cat([verts, torch.ones_like(verts[:, :1])], -1)
    normals = torch.nn.functional.normalize(verts, dim=-1)
    for i in range(len(cams)):
        clip = homo @ mvp[i].T
        ndc = clip[:, :2] / clip[:, 3:]
        facing = ((cams.positions[i] - verts) * normals).sum(-1) > 0.2
        px = ((ndc[:, 0] + 1) / 2 * photos.width).long().clamp(0, photos.width - 1)
        py = ((1 - ndc[:, 1]) / 2 * photos.height).long().clamp(0, photos.height - 1)
        acc[facing] += imgs[i][py[facing], px[facing]]
        cnt[facing] += 1
    colour = acc / cnt.clamp(min=1)

    class VertexColour(UnlitShader):
        def forward(self, params, albedo, normal, points, camera_index):
            d = torch.cdist(points, verts)
            return colour[d.argmin(-1)]

    cams_t = relit.subset(test).cameras()
    sh = VertexColour()
    with torch.no_grad():
        out = rep.render(cams_t, relit.height, relit.width, sh, sh.preview())
    return round(float(np.mean([psnr(a, b) for a, b in zip(out.rgb, gt_relit, strict=True)])), 2)


if __name__ == "__main__":
    main()
