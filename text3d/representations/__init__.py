"""What is being optimised: a NeRF, a DMTet mesh, and later an SDF or a fixed textured mesh, each behind
:class:`text3d.representations.base.Representation`."""
