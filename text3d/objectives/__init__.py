"""What a render is scored by: SDS under a frozen diffusion model today, a photometric loss against photos next,
each behind :class:`text3d.objectives.base.Objective`."""
