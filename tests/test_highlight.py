"""Highlights and overviews on generated scenes: exactly the instance's pixels stay undimmed."""
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from grounding.evaluation import SCENES, benchmark_scene
from grounding.highlight import (CONTOUR_COLOR, HighlightConfig, best_views, dim_outside, highlight_instance,
                                 overview, to_uint8)
from iggt.scene import Scene


@pytest.fixture(scope="module")
def scene() -> Scene:
    return benchmark_scene(3)[1]


def _tile_pixels(highlight, tile):
    x0, y0, x1, y1 = tile.placed_box
    return np.asarray(highlight.image)[y0:y1, x0:x1]


def test_undimmed_pixels_are_exactly_the_instance(scene):
    config = HighlightConfig(contour_width=0, max_upscale=1.0, max_pixels=2000 * 2000)
    for instance in scene.instances.info:
        highlight = highlight_instance(scene, instance.id, config)
        for tile in highlight.tiles:
            assert tile.scale == 1.0
            x0, y0, x1, y1 = tile.crop_box
            original = to_uint8(scene.images[tile.view, y0:y1, x0:x1])
            mask = scene.instances.labels[tile.view, y0:y1, x0:x1] == instance.id
            shown = _tile_pixels(highlight, tile)
            unchanged = np.all(shown == original, axis=-1)
            # pixels whose dimmed value differs from the original can tell dimmed from undimmed
            distinguishable = np.any(dim_outside(original, np.zeros_like(mask), config.dim) != original, axis=-1)
            assert np.array_equal(unchanged[distinguishable], mask[distinguishable])
            assert mask.any()


def test_outline_surrounds_the_instance_without_covering_it(scene):
    config = HighlightConfig(max_upscale=1.0, max_pixels=2000 * 2000)
    instance = scene.instances.info[1]
    highlight = highlight_instance(scene, instance.id, config)
    canvas = np.asarray(highlight.image)
    for tile in highlight.tiles:
        x0, y0, x1, y1 = tile.crop_box
        mask = scene.instances.labels[tile.view, y0:y1, x0:x1] == instance.id
        px0, py0, px1, py1 = tile.placed_box
        w = config.contour_width
        region = canvas[py0 - w:py1 + w, px0 - w:px1 + w]
        ring = np.all(region == CONTOUR_COLOR, axis=-1)
        padded = np.pad(mask, w)
        expected_ring = ndimage.binary_dilation(padded, iterations=w) & ~padded
        assert np.array_equal(ring, expected_ring)
        assert np.array_equal(ndimage.binary_fill_holes(ring) & ~ring, ndimage.binary_fill_holes(padded))


def test_best_views_prefer_large_uncut_views(scene):
    height, width = scene.image_size
    for instance in scene.instances.info:
        views = best_views(scene, instance.id, max_views=scene.num_views)
        assert sorted(views) == sorted(instance.views)

        def score(view):
            x0, y0, x1, y1 = instance.views[view].bbox
            cut = x0 == 0 or y0 == 0 or x1 == width or y1 == height
            return instance.views[view].pixel_count * (0.25 if cut else 1.0)

        scores = [score(v) for v in views]
        assert scores == sorted(scores, reverse=True)


def test_highlight_is_deterministic_and_within_budget():
    """(Its speed is measured by benchmarks/grounding.py, which prints the milliseconds per instance.)"""
    _, scene = benchmark_scene(5, config=replace(SCENES, num_views=10))
    config = HighlightConfig(max_views=10, max_pixels=512 * 512)
    pictures = [highlight_instance(scene, i.id, config) for i in scene.instances.info]
    for picture in pictures:
        assert picture.image.width * picture.image.height <= 512 * 512
    again = highlight_instance(scene, 0, config)
    assert again.image.tobytes() == pictures[0].image.tobytes()


def test_overview_marks_sit_on_their_instances(scene):
    result = overview(scene, max_views=2)
    assert result.image.width >= scene.image_size[1]
    marked = {m.instance_id for m in result.marks}
    visible = {i.id for i in scene.instances.info if any(v in result.views for v in i.views)}
    assert marked <= visible and len(marked) >= scene.instances.count - 1
    for mark in result.marks:
        x, y = mark.xy
        assert scene.instances.labels[mark.view, y, x] == mark.instance_id


def test_clear_errors(scene):
    with pytest.raises(ValueError, match="does not exist"):
        highlight_instance(scene, 99)
    with pytest.raises(ValueError, match="no instances"):
        highlight_instance(scene.with_instances(None), 0)
