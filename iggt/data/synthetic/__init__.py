"""Procedural room scenes with exact ground truth, rendered by vectorised numpy ray casting.

Why: training and testing the instance branch needs views with exact cameras, depth and
multi-view consistent instance ids, in quantity, without downloading anything. A scene is a
textured room (floor and walls, no ceiling) with 3 to 15 objects of several shape categories
and named colours, deliberately including look-alikes (same category and colour), resting on
the floor or on top of each other. Cameras follow an orbit arc, a walk past the objects or
random look-ats, always aimed at an object, so every view sees one and views overlap.

Rendering is one ray per pixel (through integer pixel coordinates, principal point at
(W/2, H/2) as the model assumes) intersected analytically with the primitives whose bounding
sphere it may meet (boxes, pyramids as convex polytopes, spheres, capped cylinders and cones,
capsules); the nearest hit
gives depth (camera z), instance id and surface normal; colour is Lambertian shading of
procedural textures by one directional light with ambient and cast shadows.

World frame of a record: the room's, z up, floor at z = 0, metres.

Public entry points are re-exported here; the modules follow the pipeline: `config` (what is
drawn), `primitives` (ray intersection), `layout` (room and objects), `cameras` (trajectories),
`render` (textures and shading), `scenes` (records and data sets).
"""
from iggt.data.synthetic.config import CATEGORIES, GeneratorConfig
from iggt.data.synthetic.scenes import generate_dataset, generate_scene, scene_seed

__all__ = ["CATEGORIES", "GeneratorConfig", "generate_dataset", "generate_scene", "scene_seed"]
