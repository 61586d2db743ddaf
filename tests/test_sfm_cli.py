"""``iggt reconstruct`` with --ba, --intrinsics, --poses and --known-length, in process, tiny model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import write_synthetic_photos
from iggt.__main__ import main
from iggt.config import IGGTConfig
from iggt.loading import save_model
from iggt.model.iggt import IGGT
from iggt.scene import Scene

pycolmap = pytest.importorskip("pycolmap")
BASE = ["--size", "56", "--clustering", "none", "--formats", "json,colmap,scene", "--device", "cpu"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("sfm_cli")
    write_synthetic_photos(root / "photos", views=3, size=112)
    torch.manual_seed(0)
    save_model(IGGT(IGGTConfig.from_preset("tiny")), root / "tiny")
    return root


def reconstruct(workspace, out: str, *options: str) -> int:
    return main(["reconstruct", str(workspace / "photos"), "--out", str(workspace / out), "--checkpoint",
                 str(workspace / "tiny"), *BASE, *options])


def test_given_intrinsics_and_known_length_reach_the_exports(workspace, capsys):
    code = reconstruct(workspace, "given", "--intrinsics", "100,100,56,56", "--known-length", "cameras:0,1=0.5",
                       "--shared-camera", "--camera-model", "SIMPLE_PINHOLE")
    out = capsys.readouterr().out
    assert code == 0
    assert "given intrinsics: predicted focal length differs by" in out and "metric scale" in out
    summary = json.loads((workspace / "given" / "summary.json").read_text())
    assert summary["units"] == "m"
    scene = Scene.load(workspace / "given" / "scene.npz")
    centres = [-np.array(v["extrinsics_world_to_camera"])[:, :3].T @ np.array(v["extrinsics_world_to_camera"])[:, 3]
               for v in summary["views"][:2]]
    assert np.linalg.norm(centres[0] - centres[1]) == pytest.approx(0.5, rel=1e-4)
    assert scene.intrinsics[0, 0, 0] == pytest.approx(100 * 56 / 112, rel=1e-4)  # photo -> model pixels
    model = pycolmap.Reconstruction(str(workspace / "given" / "colmap" / "sparse" / "0"))
    assert model.num_cameras() == 1 and model.camera(1).model.name == "SIMPLE_PINHOLE"
    assert model.camera(1).params[0] == pytest.approx(100, rel=1e-4)  # written as given
    assert sorted(p.name for p in (workspace / "given" / "colmap" / "images").iterdir()) == [
        "photo_0.png", "photo_1.png", "photo_2.png"]


def test_ba_with_too_few_tracks_keeps_the_reconstruction(workspace, capsys):
    """Random weights give cameras no features agree with: one line says so, the files are written."""
    code = reconstruct(workspace, "ba", "--ba")
    out = capsys.readouterr().out
    assert code == 0 and "kept unadjusted" in out
    assert (workspace / "ba" / "colmap" / "sparse" / "0" / "points3D.bin").is_file()
    assert json.loads((workspace / "ba" / "summary.json").read_text())["units"] == "model units"


def test_poses_align_the_reconstruction(workspace, capsys):
    rng = np.random.default_rng(0)
    poses = []
    for view in range(3):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        poses.append(np.concatenate([q * np.sign(np.linalg.det(q)), rng.normal(size=(3, 1))], axis=1).tolist())
    (workspace / "poses.json").write_text(json.dumps(poses))
    assert reconstruct(workspace, "posed", "--poses", str(workspace / "poses.json")) == 0
    assert "aligned to the given poses" in capsys.readouterr().out
    summary = json.loads((workspace / "posed" / "summary.json").read_text())
    assert summary["units"] == "units of the given poses"


@pytest.mark.parametrize("options, message", [
    (["--intrinsics", "100,100,56,56;100,100,56,56"], "2 sets of intrinsics for 3 photos"),
    (["--intrinsics", "0,100,56,56"], "focal lengths must be positive"),
    (["--known-length", "pixels:0:10,10:10,10=1"], "same pixel"),
    (["--known-length", "cameras:0,1=0"], "must be positive"),
    (["--tracks", "model", "--ba"], "needs a checkpoint with the point tracker"),
])
def test_bad_input_is_one_line(workspace, capsys, options, message):
    assert reconstruct(workspace, "bad", *options) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]


def test_poses_for_another_number_of_photos(workspace, capsys):
    (workspace / "two.json").write_text(json.dumps([np.eye(4).tolist()] * 2))
    assert reconstruct(workspace, "bad", "--poses", str(workspace / "two.json")) == 2
    assert "2 poses for 3 photos" in capsys.readouterr().err
