"""Training samples: shapes, world = first view, exact intrinsics after crops, same-shape batches."""
import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from iggt.data.scene_format import load_scene_record
from iggt.data.synthetic import GeneratorConfig, generate_dataset
from iggt.geometry import unproject_depth
from iggt.training.dataset import (DatasetConfig, SameShapeBatchSampler, SceneDataset, ViewRequest, collate_views,
                                   crop_and_resize, select_views)

NO_JITTER = DatasetConfig(image_size=112, brightness=0, contrast=0, saturation=0, hue=0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    generate_dataset(root, 3, seed=5, config=GeneratorConfig(num_views=5, image_size=(96, 128)), progress=False)
    return root


@pytest.fixture(scope="module")
def record(root):
    return load_scene_record(root / "scene_000000")


def _project(points, extrinsic, intrinsic):
    cam = points @ extrinsic[:, :3].T + extrinsic[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return intrinsic[0, 0] * cam[..., 0] / cam[..., 2] + intrinsic[0, 2], \
            intrinsic[1, 1] * cam[..., 1] / cam[..., 2] + intrinsic[1, 2], cam[..., 2]


def test_sample_shapes_and_world_at_first_view(root):
    dataset = SceneDataset(root, DatasetConfig(image_size=112), views=5)
    sample = dataset[ViewRequest(1, 3, 56, 112, seed=4)]
    assert sample["images"].shape == (3, 3, 56, 112) and sample["images"].dtype == torch.float32
    assert 0 <= sample["images"].min() and sample["images"].max() <= 1
    assert sample["depth"].shape == (3, 56, 112) and sample["valid"].dtype == torch.bool
    assert sample["instance_ids"].shape == (3, 56, 112) and sample["instance_ids"].dtype == torch.int64
    assert sample["structure_ids"].shape == (3, 56, 112)
    room = sample["valid"] & (sample["instance_ids"] == 0)
    assert torch.equal(sample["structure_ids"] > 0, room)  # the generator's records carry structure maps
    assert sample["world_points"].shape == (3, 56, 112, 3)
    assert sample["extrinsics"].shape == (3, 3, 4) and sample["intrinsics"].shape == (3, 3, 3)
    torch.testing.assert_close(sample["extrinsics"][0], torch.eye(3, 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(sample["intrinsics"][:, 0, 2], torch.full((3,), 56.0))
    torch.testing.assert_close(sample["intrinsics"][:, 1, 2], torch.full((3,), 28.0))
    # view 0's points are its own camera coordinates
    valid = sample["valid"][0]
    torch.testing.assert_close(sample["world_points"][0][valid][:, 2], sample["depth"][0][valid])
    # a plain index gives `views` views at the record's own aspect ratio
    whole = dataset[0]
    assert whole["images"].shape == (5, 3, 84, 112)
    with pytest.raises(ValueError, match="views=6 per sample"):
        SceneDataset(root, views=6)


@pytest.mark.parametrize("size,zoom", [((96, 128), 1.0), ((56, 112), 1.0), ((84, 70), 1.25), ((140, 182), 1.1)])
def test_crop_intrinsics_reproject_exactly(record, size, zoom):
    """Pixels unprojected with the new intrinsics project back into the source view onto the
    very source pixel their depth came from."""
    view = 2
    arrays, k = crop_and_resize(record, view, size, zoom)
    assert arrays["depth"].shape == size and arrays["image"].shape == (3, *size)
    assert k[0, 2] == size[1] / 2 and k[1, 2] == size[0] / 2
    points = unproject_depth(arrays["depth"][None], record.extrinsics[view:view + 1], k[None])[0]
    u, v, _ = _project(points, record.extrinsics[view], record.intrinsics[view])
    valid = arrays["depth"] > 0
    rows, cols = np.rint(v[valid]).astype(int), np.rint(u[valid]).astype(int)
    same_depth = record.depth[view][rows, cols] == arrays["depth"][valid]
    same_id = record.instance_ids[view][rows, cols] == arrays["instance_ids"][valid]
    assert same_depth.mean() > 0.995 and same_id.mean() > 0.995


def test_views_of_a_sample_agree_with_each_other(root):
    dataset = SceneDataset(root, DatasetConfig(image_size=112, zoom_range=(1.0, 1.2)))
    sample = {k: v.numpy() for k, v in dataset[ViewRequest(0, 3, 84, 112, seed=1)].items() if k != "scene_name"}
    agreements = []
    for j in (1, 2):
        valid = sample["valid"][0] & (sample["instance_ids"][0] > 0)
        u, v, z = _project(sample["world_points"][0][valid], sample["extrinsics"][j], sample["intrinsics"][j])
        u, v = np.rint(u), np.rint(v)
        inside = (z > 0) & (u >= 0) & (u < 112) & (v >= 0) & (v < 84)
        u, v, z = u[inside].astype(int), v[inside].astype(int), z[inside]
        seen = np.abs(sample["depth"][j][v, u] - z) < 0.02 * z
        ids_0 = sample["instance_ids"][0][valid][inside][seen]
        if seen.sum() > 30:
            agreements.append((ids_0 == sample["instance_ids"][j][v, u][seen]).mean())
    assert agreements and min(agreements) > 0.95, agreements


def test_sampling_is_deterministic_and_jitter_changes_colours(root):
    jittered = SceneDataset(root, DatasetConfig(image_size=112))
    request = ViewRequest(2, 2, 70, 112, seed=9)
    first, again = jittered[request], jittered[request]
    torch.testing.assert_close(first["images"], again["images"], atol=0, rtol=0)
    other = jittered[request._replace(seed=10)]
    assert not torch.equal(first["images"], other["images"])
    plain = SceneDataset(root, NO_JITTER)[request]
    assert torch.equal(plain["view_indices"], first["view_indices"])
    assert not torch.allclose(plain["images"], first["images"])


def test_view_selection_overlaps(record):
    rng = np.random.default_rng(0)
    for _ in range(10):
        views = select_views(record, 3, DatasetConfig(), rng)
        steps = {abs(b - a) for a, b in zip(views, views[1:])}
        assert len(set(views)) == 3 and len(steps) == 1 and steps <= {1, 2}
    covisible = select_views(record, 3, DatasetConfig(view_selection="covisible"), rng)
    anchor = set(np.unique(record.instance_ids[covisible[0]])) - {0}
    for view in covisible[1:]:
        assert anchor & set(np.unique(record.instance_ids[view]))
    assert select_views(record, 1, DatasetConfig(), rng)[0] in range(5)


def test_sampler_groups_equal_shapes_and_covers_every_scene(root):
    dataset = SceneDataset(root, NO_JITTER)
    sampler = SameShapeBatchSampler(dataset, images_per_batch=6, view_range=(1, 8), seed=3)
    assert sampler.view_range == (1, 5)  # capped at the views every scene has
    batches = sampler.batches()
    assert sorted(r.scene_index for b in batches for r in b) == [0, 1, 2]
    for position, batch in enumerate(batches):
        assert len({(r.num_views, r.height, r.width) for r in batch}) == 1
        full = max(1, 6 // batch[0].num_views)
        assert len(batch) == full if position < len(batches) - 1 else len(batch) <= full
    assert sampler.batches() == batches
    endless = SameShapeBatchSampler(dataset, images_per_batch=6, view_range=(1, 8), seed=3, endless=True)
    stream = [b for _, b in zip(range(12), endless)]
    all_batches = [b for epoch in range(12) for b in sampler.batches(epoch)][:12]
    assert stream == all_batches
    shards = [SameShapeBatchSampler(dataset, images_per_batch=6, view_range=(1, 8), seed=3, endless=True,
                                    start_batch=2, rank=rank, world_size=2) for rank in (0, 1)]
    first, second = ([b for _, b in zip(range(5), shard)] for shard in shards)
    assert first == all_batches[2:12:2] and second == all_batches[3:12:2]
    shapes = set()
    for epoch in range(6):
        sampler.set_epoch(epoch)
        shapes |= {(r.num_views, r.height, r.width) for b in sampler.batches() for r in b}
    assert len(shapes) > 3


def test_dataloader_stacks_batches(root):
    dataset = SceneDataset(root, NO_JITTER)
    sampler = SameShapeBatchSampler(dataset, images_per_batch=4, view_range=(2, 2), seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_views)
    batch = next(iter(loader))
    height, width = batch["images"].shape[-2:]
    assert batch["images"].shape == (2, 2, 3, height, width) and height % 14 == 0 and width % 14 == 0
    assert batch["world_points"].shape == (2, 2, height, width, 3) and len(batch["scene_name"]) == 2
    plain = next(iter(DataLoader(SceneDataset(root, NO_JITTER, views=3), batch_size=2)))
    assert plain["images"].shape == (2, 3, 3, 84, 112) and plain["valid"].shape == (2, 3, 84, 112)
    with pytest.raises(ValueError, match="different view counts or sizes"):
        collate_views([dataset[ViewRequest(0, 2, 56, 112, 0)], dataset[ViewRequest(1, 3, 56, 112, 0)]])


def test_bad_settings_are_explained(root):
    with pytest.raises(ValueError, match="multiple of 14"):
        DatasetConfig(image_size=100)
    dataset = SceneDataset(root, NO_JITTER)
    with pytest.raises(ValueError, match="has 5 views, 7 were requested"):
        dataset[ViewRequest(0, 7, 56, 112, 0)]
    with pytest.raises(ValueError, match="only 5"):
        SameShapeBatchSampler(dataset, view_range=(6, 8))
    with pytest.raises(FileNotFoundError):
        SceneDataset(root / "scene_000000" / "images")


def test_crop_beyond_the_image_is_invalid(record):
    """A principal point far off-centre makes the centred crop leave the image: no fake depth there."""
    shifted = dataclasses.replace(record, intrinsics=record.intrinsics.copy())
    shifted.intrinsics[1, 0, 2] += 30  # principal point 30 px right of the centre
    arrays, k = crop_and_resize(shifted, 1, (96, 128), 1.0)
    assert k[0, 2] == 64
    assert (arrays["depth"][:, -29:] == 0).all() and (arrays["instance_ids"][:, -29:] == 0).all()
    assert (arrays["depth"][:, :-31] > 0).mean() > 0.8
