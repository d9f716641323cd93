"""Synthetic detector datasets: random scenes of assets with exact labels, YOLO / COCO writers, edge-case search.

``build.build_dataset`` is the library call (``text3d dataset`` is its shell): ``config`` holds every range,
``assets`` reads meshes, ``scene`` samples and renders scenes, ``labels`` turns per-pixel object ids into boxes,
polygons and RLE, ``writers`` lays the files out, ``edge_cases`` searches scenes by gradient descent.
"""
