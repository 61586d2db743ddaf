"""The steps after the feed-forward pass, in order: given intrinsics, bundle adjustment, given
poses; and, once instances exist, metric scale. What the ``reconstruct`` command runs:

    scene = reconstruct("photos/")
    refined = refine(scene, RefineOptions(bundle_adjust=True))        # tracks, BA, COLMAP model
    refined = refined.scaled(KnownLength.parse("cameras:0,1=0.42"))   # metres from here on
    write_colmap(refined.scene, "out/colmap", model=refined.colmap_model)

A step that cannot run on this input (too few tracks) leaves a note and the scene as it was;
input that is wrong (intrinsics for another number of photos, poses that do not parse) raises.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from iggt.errors import IGGTError
from iggt.scene import Scene
from iggt.sfm.adjust import AdjustmentConfig, AdjustmentFailed, TooFewTracks, bundle_adjust
from iggt.sfm.cameras import KnownIntrinsics, apply_intrinsics, fit_pose_alignment
from iggt.sfm.scale import METRES, KnownLength, metric_factor, transform_scene
from iggt.sfm.tracks import FeatureTracks, ModelTracks, TrackSource, model_tracker

TrackChoice = Literal["auto", "model", "features"]


@dataclass
class RefineOptions:
    bundle_adjust: bool = False
    tracks: TrackChoice = "auto"
    """``model``: the checkpoint's point tracker; ``features``: pycolmap SIFT matched under the
    predicted cameras; ``auto``: the tracker when the model has one."""
    adjustment: AdjustmentConfig = field(default_factory=AdjustmentConfig)
    intrinsics: KnownIntrinsics | None = None
    poses: np.ndarray | None = None
    """Given world-to-camera ``[S, 3, 4]`` (`iggt.sfm.cameras.read_poses`)."""


@dataclass
class Refined:
    scene: Scene
    colmap_model: object | None = None
    """The bundle-adjusted pycolmap `Reconstruction` (None without bundle adjustment)."""
    notes: list[str] = field(default_factory=list)
    """One line per step: what it did, with its figures, or why it did not run."""

    def transformed(self, scale: float, rotation: np.ndarray | None = None, translation: np.ndarray | None = None,
                    units: str | None = None) -> "Refined":
        """Scene and COLMAP model moved by the same similarity (`iggt.sfm.scale.transform_scene`; the
        COLMAP model is moved in place and shared with the result)."""
        scene = transform_scene(self.scene, scale, rotation, translation, units)
        if self.colmap_model is not None:
            import pycolmap

            rotation = np.eye(3) if rotation is None else np.asarray(rotation, np.float64)
            translation = np.zeros(3) if translation is None else np.asarray(translation, np.float64)
            self.colmap_model.transform(pycolmap.Sim3d(float(scale), pycolmap.Rotation3d(rotation), translation))
        return Refined(scene, self.colmap_model, self.notes)

    def scaled(self, known: KnownLength) -> "Refined":
        """In metres, from one known length (the instance table and exports follow)."""
        factor = metric_factor(self.scene, known)
        refined = self.transformed(factor, units=METRES)
        refined.notes = [*self.notes, f"metric scale from a known {known.kind} length: {factor:.4g} m per "
                                      f"model unit"]
        return refined


def track_source(choice: TrackChoice, model=None, device: str = "cpu") -> TrackSource:
    """The `TrackSource` for ``choice`` (``model`` needs a model that has the point tracker)."""
    has_tracker = model is not None and getattr(model, "track_head", None) is not None
    if choice == "model" and not has_tracker:
        raise IGGTError("--tracks model needs a checkpoint with the point tracker (the released IGGT); the "
                        "shipped small model has none: use --tracks features or auto")
    if choice == "model" or (choice == "auto" and has_tracker):
        return ModelTracks(model_tracker(model, device))
    return FeatureTracks()


def refine(scene: Scene, options: RefineOptions = RefineOptions(), model=None, device: str = "cpu") -> Refined:
    """Given intrinsics, then bundle adjustment, then given poses (see the module docstring);
    ``model`` provides the point tracker when it has one."""
    refined = Refined(scene)
    if options.intrinsics is not None:
        adjusted, report = apply_intrinsics(scene, options.intrinsics)
        refined = Refined(adjusted, notes=[report.summary()])
    if options.bundle_adjust:
        config = replace(options.adjustment,
                         fix_intrinsics=options.adjustment.fix_intrinsics or options.intrinsics is not None)
        try:
            adjustment = bundle_adjust(refined.scene, track_source(options.tracks, model, device), config)
        except (TooFewTracks, AdjustmentFailed) as err:
            refined.notes.append(str(err))
        else:
            refined = Refined(adjustment.scene, adjustment.reconstruction, [*refined.notes,
                                                                          adjustment.report.summary()])
    if options.poses is not None:
        alignment = fit_pose_alignment(refined.scene, options.poses)
        refined = refined.transformed(alignment.scale, alignment.rotation, alignment.translation, alignment.units)
        refined.notes.append(alignment.summary())
    return refined
