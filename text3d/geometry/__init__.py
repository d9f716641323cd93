"""Geometry shared by training and export: meshes and their normals, the tet grid and marching tets, rays through
the scene box, isosurfaces and their automatic level, and the Asset a representation hands to export."""
