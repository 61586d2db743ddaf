"""What the procedural generator draws from: named colours, shape categories, camera paths,
and `GeneratorConfig`, the knobs of one data set."""
from __future__ import annotations

from dataclasses import dataclass

from iggt.errors import IGGTError

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 35), "green": (40, 160, 60), "blue": (35, 75, 205), "yellow": (235, 210, 40),
    "orange": (240, 130, 25), "purple": (125, 50, 170), "pink": (240, 130, 180), "brown": (120, 75, 40),
    "white": (235, 235, 230), "black": (30, 30, 30), "gray": (130, 130, 130), "cyan": (40, 200, 210),
}
"""Named object colours (uint8 RGB): the names are what grounding questions use."""

CATEGORIES: tuple[str, ...] = ("cube", "sphere", "cylinder", "cone", "pyramid", "capsule", "table", "chair")
"""Shape categories, in the order of the semantic indices (`iggt.data.scene_format.semantic_index`)."""

TRAJECTORIES = ("orbit", "walk", "lookat")
SCENE_KINDS = ("room", "tabletop")
TABLETOP_SCALE = 0.4
"""Objects of a table-top scene are this much smaller than in a room (and so is their spacing)."""
OBJECT_TEXTURES = ("plain", "stripes", "checker", "noise")


@dataclass(frozen=True)
class GeneratorConfig:
    """What kind of scenes `generate_scene` makes."""

    num_views: int = 8
    image_size: tuple[int, int] = (224, 224)
    """(height, width) in pixels."""
    object_count: tuple[int, int] = (3, 15)
    """Inclusive range of the number of objects."""
    categories: tuple[str, ...] = CATEGORIES
    colors: tuple[str, ...] = tuple(PALETTE)
    trajectories: tuple[str, ...] = TRAJECTORIES
    """Camera paths to draw from: "orbit" (arc around the objects), "walk" (straight line past
    them), "lookat" (random positions, each aimed at a random object)."""
    fov_deg: tuple[float, float] = (45.0, 70.0)
    """Range of the horizontal field of view."""
    duplicate_probability: float = 0.8
    """Chance that a scene holds a group of 2-3 objects with the same category and colour."""
    stack_probability: float = 0.3
    """Chance that a small object is put on top of a free cube, table or cylinder."""
    shadows: bool = True
    kind: str = "room"
    """"room": objects of every category on the floor of a room, seen from eye height;
    "tabletop": small objects (no tables or chairs) on a large flat surface, seen from above at
    30-70 degrees, the kind of scene of the real photo sets (the floor plays the table top)."""

    def __post_init__(self) -> None:
        problems = []
        if self.num_views < 1:
            problems.append(f"num_views must be >= 1, got {self.num_views}")
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            problems.append(f"image_size must be (height, width) of at least 8 px, got {self.image_size}")
        low, high = self.object_count
        if not 1 <= low <= high:
            problems.append(f"object_count must be (min, max) with 1 <= min <= max, got {self.object_count}")
        for name, values, known in (("categories", self.categories, CATEGORIES), ("colors", self.colors, PALETTE),
                                    ("trajectories", self.trajectories, TRAJECTORIES)):
            unknown = [v for v in values if v not in known]
            if not values or unknown:
                problems.append(f"{name} must be a non-empty subset of {list(known)}, got {list(values)}")
        if self.kind not in SCENE_KINDS:
            problems.append(f"kind must be one of {list(SCENE_KINDS)}, got {self.kind!r}")
        elif self.kind == "tabletop" and not set(self.categories) - {"table", "chair"}:
            problems.append("a tabletop scene needs a category other than table and chair")
        if not 1.0 <= self.fov_deg[0] <= self.fov_deg[1] < 170.0:
            problems.append(f"fov_deg must be (min, max) degrees within (1, 170), got {self.fov_deg}")
        if problems:
            raise IGGTError("Invalid GeneratorConfig: " + "; ".join(problems))
