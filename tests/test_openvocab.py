"""Open-vocabulary search and labels: real transformers CLIP/SigLIP from tiny configs, the seeing embedder
on generated scenes, caching, labels in every file, the command line and bad input."""
import json

import numpy as np
import pytest

from grounding import openvocab as ov
from grounding.embedders import EmbedderUnavailable, Region, make_embedder
from grounding.embedders.random_init import random_embedder
from grounding.embedders.seeing import SeeingEmbedder, colour_scores, text_axes
from iggt.__main__ import main
from iggt.data.oracle import oracle_scene
from iggt.data.synthetic import GeneratorConfig, generate_scene
from iggt.errors import IGGTError
from iggt.export import scene_summary, write_ply
from iggt.scene import Instances, Scene

SCENES = GeneratorConfig(num_views=3, image_size=(128, 128), object_count=(3, 5))
SEED = 5
"""A scene with five objects of distinct colour and shape (yellow cube, cyan cylinder, purple table, ...)."""


@pytest.fixture(scope="module")
def scene() -> Scene:
    return oracle_scene(generate_scene(SEED, SCENES))


def instance_named(scene: Scene, name: str) -> int:
    return next(i.id for i in scene.instances.info if i.name == name)


class CountingEmbedder:
    """A real embedder that counts the regions and texts it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.name, self.logit_scale = inner, inner.name, inner.logit_scale
        self.regions, self.texts = 0, 0

    def embed_regions(self, regions):
        self.regions += len(regions)
        return self.inner.embed_regions(regions)

    def embed_texts(self, texts):
        self.texts += len(texts)
        return self.inner.embed_texts(texts)


# -- the transformers route (tiny configs, random weights) -----------------------------------------

@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_transformers_embedders_give_unit_vectors_independent_of_batching(kind):
    rng = np.random.default_rng(0)
    regions = [Region(rng.integers(0, 255, (20 + 7 * i, 20 + 7 * i, 3), dtype=np.uint8),
                      rng.random((20 + 7 * i, 20 + 7 * i)) > 0.5) for i in range(5)]
    whole, batched = random_embedder(kind, batch_size=32), random_embedder(kind, batch_size=2)
    vectors = whole.embed_regions(regions)
    assert vectors.shape[0] == 5 and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched.embed_regions(regions), vectors, atol=1e-5)
    texts = whole.embed_texts(["a photo of a chair .", "red", "a photo of a red mug ."])
    assert texts.shape == (3, vectors.shape[1])
    np.testing.assert_allclose(texts[1], whole.embed_texts(["red"])[0], atol=1e-5)  # padding changes nothing
    assert not np.allclose(texts[0], texts[1])


def test_the_mask_matters_to_the_transformers_embedder():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    left, right = np.zeros((32, 32), bool), np.zeros((32, 32), bool)
    left[:, :16], right[:, 16:] = True, True
    a, b, c = random_embedder("clip").embed_regions([Region(image, left), Region(image, right), Region(image, left)])
    np.testing.assert_allclose(a, c, atol=1e-6)
    assert not np.allclose(a, b, atol=1e-4)  # random weights map everything close together, but not alike


def test_instance_pass_is_one_batch_and_cached_so_a_second_query_costs_only_text(scene):
    embedder = CountingEmbedder(random_embedder("clip"))
    cache = ov.EmbeddingCache()
    first = ov.find(scene, "chair", embedder, cache=cache)
    regions = embedder.regions
    expected, _, _ = ov.instance_regions(scene)
    assert regions == len(expected) > scene.instances.count  # several views and scales per instance
    second = ov.find(scene, "red mug", embedder, cache=cache)
    assert embedder.regions == regions and embedder.texts == 5 + 1  # query + 4 negatives, then the new query
    assert sorted(k for k, _ in first.ranked) == sorted(k for k, _ in second.ranked) == scene.instances.object_ids
    assert all(0.0 <= s <= 1.0 for _, s in first.ranked)
    assert [s for _, s in first.ranked] == sorted((s for _, s in first.ranked), reverse=True)


def test_the_disk_cache_survives_the_process(scene, tmp_path):
    embedder = CountingEmbedder(SeeingEmbedder())
    ov.embed_instances(scene, embedder, cache=ov.EmbeddingCache(tmp_path))
    again = ov.embed_instances(scene, embedder, cache=ov.EmbeddingCache(tmp_path))  # a fresh cache reads the file
    assert embedder.regions == again.regions and len(list(tmp_path.glob("*.npz"))) == 1
    changed = scene.with_instances(Instances(np.where(scene.instances.labels == 0, -1, scene.instances.labels),
                                             scene.instances.info))
    assert ov.EmbeddingCache.key(changed, embedder, ov.OpenVocabConfig()) != \
        ov.EmbeddingCache.key(scene, embedder, ov.OpenVocabConfig())


def test_a_missing_model_says_what_to_download():
    with pytest.raises(EmbedderUnavailable, match="hf download openai/clip-vit-base-patch32"):
        make_embedder("openai/clip-vit-base-patch32")


# -- the seeing embedder, end to end --------------------------------------------------------------

def test_seeing_embedder_reads_colours_and_words():
    assert text_axes("the red ball") == ["red", "sphere"]
    assert text_axes("something to sit on") == ["chair"] and text_axes("an object") == ["thing"]
    assert text_axes("chaise rouge") == ["thing"]
    shaded_red = np.array([[100, 15, 18]] * 10, np.uint8)  # a red surface in shadow
    assert colour_scores(shaded_red).argmax() == list(SeeingEmbedder().embed_texts(["red"])[0]).index(1.0)


@pytest.mark.parametrize("name", ["yellow cube", "cyan cylinder", "purple table", "brown pyramid", "pink cone"])
def test_find_ranks_the_named_object_first_with_a_calibrated_score(scene, name):
    result = ov.find(scene, name, SeeingEmbedder())
    assert result.ranked[0][0] == instance_named(scene, name)
    assert result.matches == [instance_named(scene, name)]  # the others score below the threshold
    assert "yes" in result.table().splitlines()[1]


def test_label_all_with_a_vocabulary(scene):
    labelled = ov.label_instances(scene, ["cube", "cylinder", "table", "pyramid", "cone", "sphere"], SeeingEmbedder())
    for info in labelled.instances.info:
        assert info.label == info.name.split()[1] and 0.5 < info.label_score <= 1.0
    assert labelled.instances.info[0].display_name == labelled.instances.info[0].name  # the VLM's name wins
    unnamed = Instances(labelled.instances.labels, [type(i)(**{**vars(i), "name": None})
                                                    for i in labelled.instances.info])
    assert unnamed.info[0].display_name == unnamed.info[0].label


def test_builtin_vocabularies():
    assert len(ov.load_vocabulary("scannet20")) == 20 and len(ov.load_vocabulary("scannet200")) == 200
    assert ov.load_vocabulary("chair, red mug,chair") == ["chair", "red mug"]


# -- structure --------------------------------------------------------------------------------------

def plane_scene(points: np.ndarray) -> Scene:
    """One view of 8 x 8 pixels whose points are ``points`` ``[8, 8, 3]``, all one structure instance."""
    from iggt.instances import describe_instances

    images = np.full((1, 8, 8, 3), 0.5, np.float32)
    ones = np.ones((1, 8, 8), np.float32)
    scene = Scene(images=images, extrinsics=np.eye(3, 4, dtype=np.float32)[None],
                  intrinsics=np.eye(3, dtype=np.float32)[None], depth=ones, depth_conf=ones,
                  world_points=points[None], world_points_conf=ones, points_from_depth=points[None].astype(np.float32),
                  features=np.zeros((1, 8, 8, 8), np.float32))
    instances = describe_instances(np.zeros((1, 8, 8), np.int64), points[None], images)
    instances.info[0].structure = True
    return scene.with_instances(instances)


@pytest.mark.parametrize("axis, value, expected", [(1, 1.5, "floor"), (1, -1.5, "ceiling"), (2, 4.0, "wall")])
def test_structure_is_floor_wall_or_ceiling_from_its_plane(axis, value, expected):
    u, v = np.meshgrid(np.linspace(-2, 2, 8), np.linspace(1, 5, 8))
    points = np.stack([u, v, v], axis=-1)
    points[..., axis] = value  # OpenCV camera: y points down, so y = +1.5 is below the camera
    assert ov.structure_label(plane_scene(points), 0) == expected


# -- files -----------------------------------------------------------------------------------------

def test_labels_travel_through_scene_summary_and_ply(scene, tmp_path):
    labelled = ov.label_instances(scene, "cube,cylinder,table,pyramid,cone", SeeingEmbedder())
    loaded = Scene.load(labelled.save(tmp_path / "scene.npz"))
    assert loaded.instances.label_names == labelled.instances.label_names
    assert [i.label_score for i in loaded.instances.info] == pytest.approx(
        [i.label_score for i in labelled.instances.info])
    assert scene_summary(loaded)["instances"][0]["label"] == labelled.instances.info[0].label
    data = write_ply(loaded, tmp_path / "points.ply").read_bytes()
    header = data[:data.index(b"end_header")].decode()
    assert "property int label" in header
    names = [line.split(" ", 3)[3] for line in header.splitlines() if line.startswith("comment label ") and
             line.split()[2].isdigit()]
    assert set(names) == set(labelled.instances.label_names)


def test_old_scene_files_load_without_labels(scene, tmp_path):
    loaded = Scene.load(scene.save(tmp_path / "scene.npz"))
    assert loaded.instances.label_names == [None] * scene.instances.count


# -- command line and bad input ------------------------------------------------------------------------

def test_find_and_label_on_the_command_line(scene, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = scene.save(tmp_path / "scene.npz")
    assert main(["find", str(path), "yellow cube", "--model", "seeing"]) == 0
    out = capsys.readouterr().out
    assert "1 instance(s) match 'yellow cube'" in out
    assert out.splitlines()[2].split()[1] == str(instance_named(scene, "yellow cube"))
    assert list((tmp_path / "cache").rglob("*.npz"))
    assert main(["label", str(tmp_path), "--model", "seeing", "--vocabulary", "cube,cylinder,table"]) == 0
    assert "labelled 5 instances" in capsys.readouterr().out
    assert "table" in Scene.load(path).instances.label_names


@pytest.mark.parametrize("query, message", [("  ", "the query is empty"), ("椅子", "no English word"),
                                            ("chaise rouge", "nothing in 'chaise rouge' beyond")])
def test_bad_queries_get_one_clear_line(scene, query, message):
    with pytest.raises(IGGTError, match=message):
        ov.find(scene, query, SeeingEmbedder())


def test_scene_without_instances_and_bad_vocabularies(scene, tmp_path, capsys):
    with pytest.raises(IGGTError, match="no instances"):
        ov.find(scene.with_instances(None), "chair", SeeingEmbedder())
    not_a_list = tmp_path / "vocabulary.json"
    not_a_list.write_text(json.dumps({"chair": 1}))
    with pytest.raises(IGGTError, match="must hold a JSON list"):
        ov.load_vocabulary(str(not_a_list))
    with pytest.raises(IGGTError, match="only structure"):
        ov.label_instances(scene, ["floor", "wall"], SeeingEmbedder())
    path = scene.save(tmp_path / "scene.npz")
    assert main(["label", str(path), "--model", "seeing", "--no-cache", "--vocabulary", str(not_a_list)]) == 2
    assert capsys.readouterr().err.startswith("error: vocabulary.json must hold a JSON list")


# -- the agent's pre-filter: which ranked instances a chat VLM is still asked about -----------------

@pytest.mark.parametrize("scores, kept", [
    ([0.99, 0.98, 0.6, 0.3, 0.02, 0.0], [0, 1, 2]),            # the best 3 (all within the margin)
    ([1.0, 0.1, 0.05, 0.02, 0.0], [0, 1, 2]),                  # the best 3 even when far below the best
    ([0.97, 0.9, 0.8, 0.7, 0.6, 0.01], [0, 1, 2, 3, 4]),       # everything within 0.5 of the best
    ([0.3, 0.29, 0.28, 0.27, 0.26, 0.25], None),               # flat: nothing to rank by
])
def test_shortlist_keeps_the_best_and_everything_close_to_it(scores, kept):
    ranking = ov.FindResult("cube", list(enumerate(scores)), 0.5)
    assert ov.shortlist(ranking) == kept


def test_the_apps_agent_gets_the_find_tabs_embedder_or_none(monkeypatch):
    from demo import services
    from grounding.embedders import shared_embedder

    monkeypatch.setenv("IGGT_EMBEDDER", "seeing")
    assert services.VLMService.embedder() is shared_embedder("seeing")  # one copy, shared with the Find tab

    def not_downloaded(name):
        raise EmbedderUnavailable(f"{name} is not in the local cache")

    monkeypatch.setattr(services, "shared_embedder", not_downloaded)
    assert services.VLMService.embedder() is None  # the agent then checks every instance
