"""The scene record format: exact round trip, compact files, validation that names the problem."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from iggt.data.scene_format import (SceneRecordError, list_scene_records, load_scene_record,
                                    read_scene_meta, save_scene_record)
from iggt.data.synthetic import GeneratorConfig, generate_scene

SMALL = GeneratorConfig(num_views=3, image_size=(48, 64), object_count=(3, 5))


@pytest.fixture(scope="module")
def record():
    return generate_scene(7, SMALL)


@pytest.fixture()
def saved(record, tmp_path):
    return save_scene_record(record, tmp_path / "scene")


def test_round_trip_is_exact(record, saved):
    loaded = load_scene_record(saved)
    for name in ("images", "depth", "extrinsics", "intrinsics", "instance_ids", "semantic", "structure"):
        original, back = getattr(record, name), getattr(loaded, name)
        assert back.dtype == original.dtype, name
        np.testing.assert_array_equal(back, original, err_msg=name)
    assert loaded.objects == record.objects
    assert loaded.categories == record.categories
    assert loaded.meta == json.loads(json.dumps(record.meta))
    assert loaded.name == record.name


def test_record_without_optional_label_maps_round_trips(record, tmp_path):
    record_copy = load_scene_record(save_scene_record(record, tmp_path / "a"))
    record_copy.semantic = record_copy.structure = None
    loaded = load_scene_record(save_scene_record(record_copy, tmp_path / "b"))
    assert loaded.semantic is None and loaded.structure is None


def test_six_views_at_224_px_are_well_under_a_megabyte(tmp_path):
    record = generate_scene(3, GeneratorConfig(num_views=6, image_size=(224, 224)))
    folder = save_scene_record(record, tmp_path / "big")
    total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert total < 700_000, total


def test_list_scene_records_finds_folders_sorted(record, tmp_path):
    for name in ("b", "a"):
        save_scene_record(record, tmp_path / "root" / name)
    (tmp_path / "root" / "not_a_scene").mkdir()
    assert [p.name for p in list_scene_records(tmp_path / "root")] == ["a", "b"]
    assert list_scene_records(tmp_path / "root" / "a") == [tmp_path / "root" / "a"]


def test_missing_image_is_named(saved):
    (saved / "images" / "001.png").unlink()
    with pytest.raises(SceneRecordError, match=r"images.*found 2 PNG files.*3 views"):
        load_scene_record(saved)


def test_renamed_view_is_named(saved):
    (saved / "depth" / "002.png").rename(saved / "depth" / "009.png")
    with pytest.raises(SceneRecordError, match=r"missing file .*depth.002\.png"):
        load_scene_record(saved)


def test_missing_meta_and_cameras_are_named(saved, tmp_path):
    (saved / "cameras.json").unlink()
    with pytest.raises(SceneRecordError, match="missing cameras.json"):
        load_scene_record(saved)
    with pytest.raises(SceneRecordError, match="missing meta.json"):
        load_scene_record(tmp_path)


def test_bad_camera_matrix_is_named(saved):
    cameras = json.loads((saved / "cameras.json").read_text())
    cameras["extrinsics"][1][0][0] *= 3.0  # no longer a rotation
    (saved / "cameras.json").write_text(json.dumps(cameras))
    with pytest.raises(SceneRecordError, match="cameras.json: extrinsics of camera 1"):
        load_scene_record(saved)


def test_bad_intrinsics_and_camera_count_are_named(saved):
    cameras = json.loads((saved / "cameras.json").read_text())
    cameras["intrinsics"][2][0][0] = -5.0
    (saved / "cameras.json").write_text(json.dumps(cameras))
    with pytest.raises(SceneRecordError, match="intrinsics of camera 2"):
        load_scene_record(saved)
    cameras["intrinsics"] = cameras["intrinsics"][:2]
    (saved / "cameras.json").write_text(json.dumps(cameras))
    with pytest.raises(SceneRecordError, match=r"expected \(3, 3, 3\)"):
        load_scene_record(saved)


def test_image_of_wrong_size_is_named(saved):
    Image.new("RGB", (10, 10)).save(saved / "images" / "000.png")
    with pytest.raises(SceneRecordError, match=r"000\.png: image is 10x10.*48x64"):
        load_scene_record(saved)


def test_ids_that_are_not_integer_are_named(saved):
    Image.fromarray(np.zeros((48, 64), np.float32)).save(saved / "instances" / "001.tiff")
    shutil.move(saved / "instances" / "001.tiff", saved / "instances" / "001.png")
    with pytest.raises(SceneRecordError, match=r"instances.001\.png.*not single-channel integer"):
        load_scene_record(saved)
    Image.new("RGB", (64, 48)).save(saved / "instances" / "001.png")
    with pytest.raises(SceneRecordError, match=r"instances.001\.png: PNG mode RGB"):
        load_scene_record(saved)


def test_ids_missing_from_objects_are_named(saved):
    meta = json.loads((saved / "meta.json").read_text())
    meta["objects"] = meta["objects"][1:]
    (saved / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SceneRecordError, match=r"ids \[1\] are not listed"):
        load_scene_record(saved)
    meta["objects"][1]["id"] = meta["objects"][0]["id"]
    (saved / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SceneRecordError, match="object ids must be distinct"):
        load_scene_record(saved)


def test_wrong_format_and_broken_json_are_named(saved):
    meta = json.loads((saved / "meta.json").read_text())
    meta["format_version"] = 99
    (saved / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SceneRecordError, match="unsupported format_version 99"):
        read_scene_meta(saved)
    (saved / "meta.json").write_text("{not json")
    with pytest.raises(SceneRecordError, match="not valid JSON"):
        read_scene_meta(saved)


def test_saving_inconsistent_arrays_is_refused(record, tmp_path):
    broken = load_scene_record(save_scene_record(record, tmp_path / "ok"))
    broken.depth = broken.depth[:, :10]
    with pytest.raises(SceneRecordError, match="depth has shape"):
        save_scene_record(broken, tmp_path / "broken")
