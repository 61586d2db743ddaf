"""Checkpoints: official key layout, our save/load round trip, the released formats, bad files, offline Hub."""
import json
import logging
import math
import time
from pathlib import Path

import pytest
import torch

from iggt.checkpoints import CheckpointError, apply_state_dict, read_config, read_state_dict
from iggt.config import IGGTConfig
from iggt.loading import load_checkpoint_file, load_model, load_official_weights, save_model
from iggt.model.iggt import IGGT

REFERENCE = Path(__file__).resolve().parent / "data"

# Section 2 of the architecture reference: state-dict numbers (parameters + buffers) per module.
OFFICIAL_MODULE_NUMBERS = {
    "aggregator": 909_112_320,
    "camera_head": 216_174_610,
    "depth_head": 32_654_562,
    "point_head": 32_654_628,
    "part_adaptor": 11_622_671,
    "part_head": 31_339_386,
    "track_head": 65_941_396,
}


pytestmark = pytest.mark.usefixtures("single_thread")


def reference_state_dict(name: str) -> dict[str, list[int]]:
    """Shapes of a released checkpoint (tests/data, copied from the reference material)."""
    return json.loads((REFERENCE / name).read_text())


@pytest.fixture(scope="module")
def official_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = IGGT(IGGTConfig.from_preset("iggt-1b"))
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny() -> IGGT:
    torch.manual_seed(0)
    return IGGT(IGGTConfig.from_preset("tiny")).eval()


def outputs(model: IGGT, seed: int = 0) -> dict[str, torch.Tensor]:
    x = torch.rand(2, 3, 28, 42, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        out = model(x)
    return {"pose_enc": out.pose_enc, "depth": out.depth, "points": out.world_points, "features": out.instance_features}


def assert_same_outputs(a: IGGT, b: IGGT) -> None:
    for (name, x), y in zip(outputs(a).items(), outputs(b).values()):
        torch.testing.assert_close(x, y, atol=0, rtol=0, msg=name)


# ----------------------------------------------------------------------------- official layouts


def test_every_official_key_maps_onto_the_iggt_1b_preset(official_shapes):
    kept = {k: tuple(v) for k, v in reference_state_dict("iggt-official-state-dict.json").items()}
    assert sorted(set(kept) - set(official_shapes)) == []
    assert sorted(set(official_shapes) - set(kept)) == []
    assert [k for k in kept if kept[k] != official_shapes[k]] == []
    for module, expected in OFFICIAL_MODULE_NUMBERS.items():
        numbers = sum(math.prod(shape) for name, shape in official_shapes.items() if name.startswith(module + "."))
        assert numbers == expected, module


def test_vggt_keys_map_onto_the_geometry_part(official_shapes):
    kept = {k: tuple(v) for k, v in reference_state_dict("vggt-official-state-dict.json").items()}
    geometry = {k: v for k, v in official_shapes.items() if not k.startswith(("part_adaptor.", "part_head."))}
    assert kept == geometry


def test_unused_official_weights_are_buffers_not_parameters():
    """Entries no forward pass reads must not look trainable (and must still load)."""
    with torch.device("meta"):
        model = IGGT(IGGTConfig.from_preset("tiny"))
    parameters = dict(model.named_parameters())
    for name in model.state_dict():
        if name.endswith("mask_token") or name.startswith(("part_head.norm", "part_head.projects", "part_head.resize_layers")):
            assert name not in parameters, name


# ----------------------------------------------------------------------------- files the release accepts


@pytest.fixture(scope="module")
def meta_1b() -> IGGT:
    with torch.device("meta"):
        return IGGT(IGGTConfig.from_preset("iggt-1b"))


def official_listing_state(drop: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """A state dict shaped like the released checkpoint's listing (meta tensors), with changes."""
    shapes = reference_state_dict("iggt-official-state-dict.json")
    state = {name: torch.empty(shape, device="meta") for name, shape in shapes.items() if not name.startswith(drop)}
    state.update({name: torch.empty(3, device="meta") for name in extra})
    return state


def test_the_released_listing_loads_without_problems(meta_1b):
    report = apply_state_dict(meta_1b, official_listing_state(), source="official.pt",
                              unused=meta_1b.state_entries_unused_by_forward())
    assert report.problems() == [] and report.warnings() == []
    assert report.skipped == [] and "track_head.tracker.query_ref_token" in report.loaded


@pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter:UserWarning")  # meta tensors: shapes only
def test_entries_the_forward_never_reads_may_be_missing_and_extra_entries_are_accepted(meta_1b, caplog):
    """As the release's `load_state_dict(strict=False)`: loaded, with every difference in the log."""
    never_read = ("aggregator.patch_embed.mask_token", "part_head.norm.", "part_head.projects.",
                  "part_head.resize_layers.", "part_head.cross_attention_1.",
                  "part_head.window_cross_attention.relative_position_index_OCA",
                  "part_head.window_self_atten.relative_position_index_SA",
                  "part_adaptor.resize_layers.0.1.input_proj.1.num_batches_tracked")
    state = official_listing_state(drop=never_read, extra=("optimizer_step", "sam.image_encoder.x"))
    with caplog.at_level(logging.WARNING, logger="iggt.checkpoints"):
        report = apply_state_dict(meta_1b, state, source="hub.pt", unused=meta_1b.state_entries_unused_by_forward())
    assert report.problems() == []
    assert len(report.missing) > len(never_read) and report.missing_but_used == []
    assert report.unexpected == ["optimizer_step", "sam.image_encoder.x"]
    assert "unexpected: sam.image_encoder.x (ignored)" in caplog.text
    assert "missing: part_head.cross_attention_1.proj.weight (not read by the forward pass)" in caplog.text


def test_a_missing_entry_that_the_forward_reads_is_refused_by_name(meta_1b):
    state = official_listing_state(drop=("part_head.cross_attention_2.projq.", "aggregator.frame_blocks.3.attn.qkv.weight"))
    with pytest.raises(CheckpointError) as error:
        apply_state_dict(meta_1b, state, source="hub.pt", unused=meta_1b.state_entries_unused_by_forward())
    message = str(error.value)
    assert "3 problems" in message
    for name in ("part_head.cross_attention_2.projq.weight", "part_head.cross_attention_2.projq.bias",
                 "aggregator.frame_blocks.3.attn.qkv.weight"):
        assert f"missing: {name} (used by the forward pass)" in message


def test_a_model_trained_with_the_extra_attention_needs_its_weights():
    with torch.device("meta"):
        legacy = IGGT(IGGTConfig.from_preset("iggt-1b").replace(apply_discarded_cross_attention=True))
    assert not any(".cross_attention_1." in name for name in legacy.state_entries_unused_by_forward())


def test_an_official_style_file_without_unused_entries_loads_end_to_end(tiny, tmp_path):
    """Wrapped, ``module.``-prefixed, with extras and without the entries nothing reads: same outputs."""
    unused = tiny.state_entries_unused_by_forward()
    state = {f"module.{k}": v for k, v in tiny.state_dict().items() if k not in unused}
    state["module.track_head.fnet.weight"] = torch.zeros(2)
    state["module.extra.step"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "IGGT.pth")
    (tmp_path / "config.json").write_text(tiny.config.to_json())
    model = load_model(tmp_path / "IGGT.pth")
    assert model.load_report.problems() == [] and sorted(model.load_report.missing) == sorted(unused)
    assert model.load_report.unexpected == ["extra.step"]
    assert_same_outputs(tiny, model)


# ----------------------------------------------------------------------------- our format


def test_save_and_load_round_trip(tiny, tmp_path):
    save_model(tiny, tmp_path / "saved")
    assert IGGTConfig.from_dict(json.loads((tmp_path / "saved" / "config.json").read_text())) == tiny.config
    loaded = load_model(tmp_path / "saved")
    assert loaded.config == tiny.config and not loaded.training
    assert loaded.load_report.problems() == [] and loaded.load_report.warnings() == []
    assert_same_outputs(tiny, loaded)


def test_loading_refuses_weights_of_another_shape(tiny, tmp_path):
    save_model(tiny, tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    config["dpt_features"] = config["instance_features"] = 16
    (tmp_path / "saved" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape mismatch: depth_head"):
        load_model(tmp_path / "saved")


def test_a_config_saved_before_the_head_field_keeps_the_head_it_was_trained_with(tiny, tmp_path):
    """Models saved before `apply_discarded_cross_attention` existed were trained with it applied."""
    save_model(tiny, tmp_path / "old")
    values = json.loads((tmp_path / "old" / "config.json").read_text())
    assert values.pop("apply_discarded_cross_attention") is False
    (tmp_path / "old" / "config.json").write_text(json.dumps(values))
    assert read_config(tmp_path / "old" / "config.json").apply_discarded_cross_attention is True
    old = load_model(tmp_path / "old")
    assert old.part_head.apply_discarded_cross_attention
    assert not torch.equal(outputs(old)["features"], outputs(tiny)["features"])  # the behaviour differs
    torch.testing.assert_close(outputs(old)["depth"], outputs(tiny)["depth"], atol=0, rtol=0)


def test_the_shipped_model_states_its_instance_head():
    from iggt.reconstruct import DEFAULT_CHECKPOINT

    values = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())
    assert "apply_discarded_cross_attention" in values


# ----------------------------------------------------------------------------- released formats


def test_official_style_pth_with_module_prefix_and_track_head(tiny, tmp_path):
    state = {f"module.{k}": v for k, v in tiny.state_dict().items()}
    state["module.track_head.x"] = torch.zeros(3)
    path = tmp_path / "iggt.pth"
    torch.save({"model": state, "epoch": 7}, path)
    (tmp_path / "config.json").write_text(tiny.config.to_json())
    model = load_model(path)
    report = model.load_report
    assert report.skipped == ["track_head.x"]
    assert report.problems() == [] and len(report.loaded) == len(tiny.state_dict())
    assert "track_head" in report.summary()
    assert_same_outputs(tiny, model)


def test_safetensors_file_and_state_dict_wrapper(tiny, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(path))
    model, report = load_checkpoint_file(path, tiny.config)
    assert report.problems() == []
    assert_same_outputs(tiny, model)
    torch.save({"state_dict": tiny.state_dict()}, tmp_path / "wrapped.pt")
    assert set(read_state_dict(tmp_path / "wrapped.pt")) == set(tiny.state_dict())


def test_vggt_checkpoint_loads_geometry_and_keeps_instance_branch_fresh(tiny, tmp_path):
    geometry = {k: v for k, v in tiny.state_dict().items() if not k.startswith(("part_adaptor.", "part_head."))}
    torch.save(geometry, tmp_path / "vggt.pt")
    model, report = load_checkpoint_file(tmp_path / "vggt.pt", tiny.config)
    assert report.missing and all(name.startswith(("part_adaptor.", "part_head.")) for name in report.missing)
    assert report.problems() == [] and report.missing_but_used == []
    torch.testing.assert_close(model.aggregator.camera_token, tiny.aggregator.camera_token)


def test_official_weights_initialise_an_existing_model(tiny, tmp_path):
    geometry = {k: v for k, v in tiny.state_dict().items() if not k.startswith(("part_adaptor.", "part_head."))}
    torch.save(geometry, tmp_path / "vggt.pt")
    model = IGGT(tiny.config)
    report = load_official_weights(model, "vggt", tmp_path / "vggt.pt")
    assert model.load_report is report and report.missing
    torch.testing.assert_close(model.camera_head.embed_pose.weight, tiny.camera_head.embed_pose.weight)
    with pytest.raises(CheckpointError, match=r"missing: part_adaptor\.norm\.bias \(used by the forward pass\)"):
        load_official_weights(IGGT(tiny.config), "iggt", tmp_path / "vggt.pt")
    with pytest.raises(ValueError, match="expected 'iggt' or 'vggt'"):
        load_official_weights(model, "dino", tmp_path / "vggt.pt")


def test_strict_loading_lists_every_problem(tiny, caplog):
    state = dict(tiny.state_dict())
    state.pop("camera_head.embed_pose.bias")
    state["aggregator.extra"] = torch.zeros(1)
    state["depth_head.norm.weight"] = torch.zeros(5)
    model = IGGT(tiny.config)
    with pytest.raises(CheckpointError) as error:
        apply_state_dict(model, state, source="test.pt")
    message = str(error.value)
    assert "test.pt" in message and "2 problems" in message
    assert "missing: camera_head.embed_pose.bias (used by the forward pass)" in message
    assert "shape mismatch: depth_head.norm.weight is [5] in the file" in message
    assert "aggregator.extra" not in message  # extra entries are accepted, as by the release
    with caplog.at_level(logging.WARNING, logger="iggt.checkpoints"):
        report = apply_state_dict(model, state, source="test.pt", strict=False)
    assert "unexpected: aggregator.extra (ignored)" in caplog.text  # non-strict loading is never silent
    assert report.missing == ["camera_head.embed_pose.bias"]
    assert report.shape_mismatches == [("depth_head.norm.weight", (5,), tuple(model.depth_head.norm.weight.shape))]
    assert report.unexpected == ["aggregator.extra"]
    torch.testing.assert_close(model.aggregator.camera_token, tiny.aggregator.camera_token)


# ----------------------------------------------------------------------------- bad files


class NotATensor:
    """Unpickling this needs code execution, which weights_only refuses."""


def test_pickle_with_custom_class_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": NotATensor()}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pth"):
        read_state_dict(path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_names_itself(tiny, tmp_path, suffix):
    from safetensors.torch import save_file

    whole = tmp_path / f"whole{suffix}"
    state = {k: v.contiguous() for k, v in tiny.state_dict().items()}
    if suffix == ".pth":
        torch.save(state, whole)
    else:
        save_file(state, str(whole))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"cut\{suffix}"):
        read_state_dict(cut)


def test_missing_file_and_unknown_spec():
    with pytest.raises(CheckpointError, match="not found: nowhere.pt"):
        read_state_dict("nowhere.pt")
    for spec in ("./no/such/thing.pt", "checkpoints/model.pth"):
        with pytest.raises(CheckpointError, match="not a preset"):
            load_model(spec)


def test_folder_with_one_checkpoint_loads_it_and_with_two_asks_which(tiny, tmp_path):
    torch.save(tiny.state_dict(), tmp_path / "IGGT.pth")
    (tmp_path / "config.json").write_text(tiny.config.to_json())
    assert load_model(tmp_path).load_report.source.endswith("IGGT.pth")
    (tmp_path / "other.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"2 checkpoint files \(IGGT.pth, other.pt\).*pass the file"):
        load_model(tmp_path)


def test_preset_gives_random_weights_without_report():
    model = load_model("tiny")
    assert model.config == IGGTConfig.from_preset("tiny") and model.load_report is None


def test_offline_hub_id_fails_fast_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="hf download lifuguan/IGGT_official"):
        load_model("lifuguan/IGGT_official")
    assert time.monotonic() - start < 10


def test_offline_the_hub_choice_is_made_among_the_cached_files(tiny, tmp_path, monkeypatch):
    """The cache as huggingface_hub lays it out (blobs, a snapshot of links, refs/main), as a Space's
    ``preload_from_hub`` leaves it: offline, the repository's files are listed there and the rule chooses."""
    import hashlib
    import io

    from huggingface_hub import constants
    from safetensors.torch import save as safetensors_bytes

    from iggt.checkpoints import checkpoint_file_in_repo

    geometry = {k: v.contiguous() for k, v in tiny.state_dict().items() if not k.startswith(("part_adaptor.", "part_head."))}
    geometry["aggregator.padding"] = torch.zeros(3_000_000)  # the largest file, but VGGT's entries only
    pt = io.BytesIO()
    torch.save(tiny.state_dict(), pt)
    files = {"config.json": tiny.config.to_json().encode(), "vggt.safetensors": safetensors_bytes(geometry),
             "iggt.safetensors": safetensors_bytes({k: v.contiguous() for k, v in tiny.state_dict().items()}),
             "optimizer.pt": pt.getvalue()[:1000]}
    repo = tmp_path / "cache" / "models--someone--iggt"
    commit = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../..") / "blobs" / blob.name)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    choice = checkpoint_file_in_repo("someone/iggt")
    assert choice.filename == "iggt.safetensors" and choice.config_name == "config.json"
    assert "not IGGT: vggt.safetensors" in choice.reason
    model = load_model("someone/iggt")
    assert model.load_report.hub_file == choice and model.load_report.source == "someone/iggt:iggt.safetensors"
    assert_same_outputs(tiny, model)
    named = load_model("someone/iggt:iggt.safetensors").load_report.hub_file
    assert (named.filename, named.reason) == ("iggt.safetensors", "named after the repository id")
    with pytest.raises(CheckpointError, match=r"has no file 'missing\.pt' cached"):
        load_model("someone/iggt:missing.pt")
