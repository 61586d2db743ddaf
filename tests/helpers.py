"""Plain helpers of the tests (pytest discourages importing from conftest.py). Running the app and
driving its page, which benchmarks and scripts need too, are in the repository's `tools/`."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent


def write_synthetic_photos(folder: Path, seed: int = 3, views: int = 3, size: int = 112) -> list[Path]:
    """PNG photos of one generated scene (the pictures only, as a user would upload them)."""
    from iggt.data.synthetic import GeneratorConfig, generate_scene

    record = generate_scene(seed, GeneratorConfig(num_views=views, image_size=(size, size), object_count=(3, 5)))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(record.images):
        paths.append(folder / f"photo_{index}.png")
        Image.fromarray(image).save(paths[-1])
    return paths
