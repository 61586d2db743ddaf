"""``python -m iggt reconstruct`` end to end in a subprocess, with a tiny checkpoint saved to tmp."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iggt.__main__ import main
from iggt.config import IGGTConfig
from iggt.loading import save_model
from iggt.model.iggt import IGGT

REPOSITORY = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iggt", *args], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPOSITORY), HF_HUB_OFFLINE="1"),
                          timeout=300)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Three photos of coloured blocks and a tiny model saved with save_model."""
    root = tmp_path_factory.mktemp("cli")
    (root / "photos").mkdir()
    rng = np.random.default_rng(3)
    for index in range(3):
        photo = np.full((60, 80, 3), 200, np.uint8)
        photo[10 + index:40, 10:40] = (220, 30, 30)
        photo[30:55, 45 + index:75] = (30, 30, 220)
        photo = np.clip(photo + rng.integers(-10, 10, photo.shape), 0, 255).astype(np.uint8)
        Image.fromarray(photo).save(root / "photos" / f"shot{index}.jpg")
    torch.manual_seed(0)
    save_model(IGGT(IGGTConfig.from_preset("tiny")), root / "tiny")
    return root


def test_reconstruct_writes_every_format(workspace):
    result = run_cli("reconstruct", "photos", "--out", "out", "--checkpoint", "tiny", "--size", "56",
                     "--clustering", "small", "--conf-percentile", "10", cwd=workspace)
    assert result.returncode == 0, result.stderr
    out = workspace / "out"
    for name in ("scene.glb", "features.glb", "points.ply", "summary.json", "scene.npz",
                 "colmap/cameras.txt", "colmap/images.txt", "colmap/points3D.txt"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_views"] == 3 and [v["name"] for v in summary["views"]] == ["shot0.jpg", "shot1.jpg",
                                                                                  "shot2.jpg"]
    masks = sorted((out / "masks").glob("*_ids.png"))
    photo = Image.open(workspace / "photos" / "shot0.jpg")
    assert len(masks) == 3 and np.array(Image.open(masks[0])).shape == photo.size[::-1]  # the photo's own size
    # The summary names what was written with paths relative to the working folder.
    assert "out/scene.glb" in result.stdout and f"{summary['num_instances']} instances" in result.stdout
    assert "tiny" in result.stdout


def test_video_frames_without_clustering(workspace, monkeypatch, capsys):
    import imageio.v3 as iio

    frames = np.stack([np.full((42, 56, 3), 20 * i, np.uint8) for i in range(6)])
    iio.imwrite(workspace / "walk.mp4", frames, fps=6, codec="libx264", plugin="pyav")
    monkeypatch.chdir(workspace)
    code = main(["reconstruct", "walk.mp4", "--frames", "3", "--out", "video", "--checkpoint", "tiny",
                 "--size", "28", "--clustering", "none", "--formats", "json,ply"])
    assert code == 0
    summary = json.loads((workspace / "video" / "summary.json").read_text())
    assert [v["name"] for v in summary["views"]] == ["walk_frame00000.png", "walk_frame00002.png",
                                                     "walk_frame00005.png"]
    assert summary["instances"] is None and not (workspace / "video" / "masks").exists()
    assert "instances not computed" in capsys.readouterr().out


def test_help_documents_every_option():
    result = run_cli("reconstruct", "--help", cwd=REPOSITORY)
    assert result.returncode == 0
    for option in ("--out", "--checkpoint", "--device", "--dtype", "--size", "--mode", "--max-views", "--every",
                   "--frames", "--clustering", "--formats", "--conf-percentile", "--background", "--geometry"):
        assert option in result.stdout


def test_dispatcher_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listing = capsys.readouterr().out
    for command in ("reconstruct", "train", "generate", "evaluate", "ask"):
        assert command in listing


def test_bad_input_in_a_subprocess_is_one_line_without_traceback(workspace):
    result = run_cli("reconstruct", "photos/missing.jpg", "--out", "bad", "--checkpoint", "tiny", cwd=workspace)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: missing.jpg: file not found (photos/missing.jpg)"


@pytest.mark.parametrize("args, message", [
    (["notes.txt"], "notes.txt: unsupported file type"),
    (["photos", "--max-views", "2"], "too many views"),
    (["photos", "--formats", "glb,obj"], "unknown format(s) obj"),
    (["photos", "--clustering", "none", "--formats", "masks"], "masks need instances"),
    (["photos", "--checkpoint", "nowhere/at/all"], "cannot find model"),
    (["photos", "--size", "big"], "--size must be a number"),
    (["photos", "--mode", "resize"], "--mode resize needs --size"),
    (["photos", "--device", "cuda:7"], "no CUDA GPU"),
])
def test_bad_input_gives_exit_code_2_and_a_message(workspace, monkeypatch, capsys, args, message):
    (workspace / "notes.txt").write_text("not a photo")
    monkeypatch.chdir(workspace)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    checkpoint = [] if "--checkpoint" in args else ["--checkpoint", "tiny"]
    assert main(["reconstruct", *args, "--out", "bad", *checkpoint]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and len(error.strip().splitlines()) == 1


def test_a_defect_is_logged_with_its_traceback_and_called_a_fault_of_the_software(workspace, monkeypatch, capsys,
                                                                                 caplog):
    import iggt.cli_reconstruct

    def defect(args):
        return np.zeros(2).reshape(3)  # numpy's own ValueError: not the user's mistake

    monkeypatch.setattr(iggt.cli_reconstruct, "run", defect)
    monkeypatch.chdir(workspace)
    assert main(["reconstruct", "photos", "--out", "o"]) == 1
    assert "fault of the software" in capsys.readouterr().err
    (record,) = [r for r in caplog.records if r.name == "iggt"]
    assert record.exc_info is not None and "cannot reshape" in str(record.exc_info[1])
