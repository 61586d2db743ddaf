"""Structure from motion around the feed-forward model: tracks, bundle adjustment, the user's own
cameras and metric scale. Every step takes a `Scene` and hands back a `Scene`.

* `iggt.sfm.tracks`: point tracks (the model's tracker, or pycolmap features matched under the
  predicted cameras);
* `iggt.sfm.adjust`: triangulation and pycolmap bundle adjustment, giving a COLMAP model with
  real 2D-3D observations;
* `iggt.sfm.cameras`: known intrinsics and poses (parsing, applying, aligning);
* `iggt.sfm.scale`: metric scale from one known length;
* `iggt.sfm.colmap`: conversions between a `Scene` and a pycolmap `Reconstruction`;
* `iggt.sfm.refine`: the steps in the order the ``reconstruct`` command runs them.

docs/colmap.md explains them for users.
"""
