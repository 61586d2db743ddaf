"""The GPU check (benchmarks/gpu_check.py) works before a GPU is ever lent: its CPU dry run runs
every step (environment, the gpu tests, the speed table, scene generation, training from the
shipped model, the model parts, both evaluations) and returns what a device machine can return.

The dry run runs as on the GPU machine's image, which lacks some of this project's packages:
they are made unimportable for it (hdbscan, the one it needs, travels there as a wheel)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_model import init_at_size, join, split  # noqa: E402
from gpu_speed import VGGT_H100, speed_table  # noqa: E402

from iggt.loading import load_model  # noqa: E402
from iggt.reconstruct import DEFAULT_CHECKPOINT  # noqa: E402

RETURNED_FILES = {"summary.md", "results.json", "log.txt", "eval-trained.json", "eval-shipped.json",
                  "model-1-of-2.safetensors", "model-2-of-2.safetensors"}
DEVICE_FILE_LIMIT = 16 * 2**20
"""What the device machine returns: at most 8 files of 16 MiB."""
ABSENT_ON_GPU_MACHINE = ("gradio", "trimesh", "viser", "openai", "qwen_vl_utils", "pillow_heif", "av")
"""Packages of requirements.txt that the GPU machine's image does not have (KINDS.md's list)."""
HIDING_SITECUSTOMIZE = f"""
import sys


class HideModules:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT_ON_GPU_MACHINE!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (absent on the GPU machine)")
        return None


sys.meta_path.insert(0, HideModules())
"""


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> Path:
    """The output folder of one dry run."""
    root = tmp_path_factory.mktemp("gpu-check")
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(HIDING_SITECUSTOMIZE)  # imported by every Python it starts
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run",
                    "--out", str(root / "out"), "--work", str(root / "work")],
                   check=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(root / "site")))
    return root / "out"


def test_dry_run_returns_what_a_device_machine_can_return(dry_run):
    files = list(dry_run.iterdir())
    assert {f.name for f in files} == RETURNED_FILES
    assert len(files) <= 8 and all(f.is_file() and f.stat().st_size < DEVICE_FILE_LIMIT for f in files)


def test_dry_run_runs_every_step(dry_run):
    results = json.loads((dry_run / "results.json").read_text())
    steps = results["steps"]
    assert results["dry_run"]
    assert {name: entry["status"] for name, entry in steps.items()} == dict.fromkeys(
        ("env", "tests", "speed", "openvocab", "tracks", "data", "train", "model", "evaluate-trained", "evaluate-shipped", "scale", "ba"), "ok")
    packages = steps["env"]["report"]["packages"]
    assert packages["torch"]["ok"] and packages["hdbscan"]["ok"]
    assert not any(packages[name]["ok"] for name in ABSENT_ON_GPU_MACHINE)  # really absent for the dry run
    # on a CPU every CUDA test is collected and skipped, with the reason
    assert steps["tests"]["counts"]["skipped"] == len(steps["tests"]["cases"]) >= 7
    assert all("CUDA" in case["message"] for case in steps["tests"]["cases"])
    assert [row["views"] for row in steps["speed"]["rows"]] == [1, 2]
    assert steps["train"]["steps_done"] == 20
    for name in ("trained", "shipped"):
        assert steps[f"evaluate-{name}"]["scenes_evaluated"] == 2
        assert 0 <= steps[f"evaluate-{name}"]["instances"]["t_miou"] <= 1
    assert [(row["views"], row["ratio"]) for row in steps["scale"]["rows"]] == [(2, 0.0), (2, 0.5), (3, 0.5)]
    summary = (dry_run / "summary.md").read_text()
    assert "| 100 | not measured |" in summary and "| 3.12 | 21.2 |" in summary  # VGGT beside ours


def test_trained_model_parts_join_into_a_loadable_model(dry_run, tmp_path):
    model = load_model(join(dry_run, tmp_path / "joined"))
    assert model.config.img_size == 56 and not model.config.apply_discarded_cross_attention
    assert model.load_report is not None and not model.load_report.missing


def test_init_at_another_size_changes_only_the_position_table_shape(tmp_path):
    """The shipped model at 224 px predicts the same before and after its table is resized to 224 px."""
    shipped = load_model(DEFAULT_CHECKPOINT)
    shipped.part_head.apply_discarded_cross_attention = False  # the head the resized model gets
    resized = load_model(init_at_size(str(DEFAULT_CHECKPOINT), 224, tmp_path / "init"))
    assert resized.config.img_size == 224 and not resized.config.apply_discarded_cross_attention
    table = resized.aggregator.patch_embed.pos_embed
    assert table.shape[1] == 1 + 16 * 16
    images = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before, after = shipped(images), resized(images)
    for name in ("pose_enc", "depth", "world_points", "instance_features"):
        a, b = getattr(after, name), getattr(before, name)
        assert (a - b).norm() <= 1e-5 * b.norm(), name  # the same up to the order of float operations


def test_split_and_join_keep_every_tensor(tiny_checkpoint, tmp_path):
    parts = split(tiny_checkpoint, tmp_path / "parts", part_mib=1.0)
    assert len(parts) > 2 and all(p.stat().st_size < 1.1 * 2**20 for p in parts)
    original, joined = load_model(tiny_checkpoint), load_model(join(tmp_path / "parts", tmp_path / "joined"))
    assert joined.config == original.config
    for (name, a), (_, b) in zip(original.state_dict().items(), joined.state_dict().items()):
        assert torch.equal(a, b), name


def test_join_names_missing_parts(tiny_checkpoint, tmp_path):
    parts = split(tiny_checkpoint, tmp_path / "parts", part_mib=1.0)
    parts[1].unlink()
    with pytest.raises(FileNotFoundError, match="model-1-of-N"):
        join(tmp_path / "parts", tmp_path / "joined")


def test_speed_table_puts_vggt_beside_our_figures():
    rows = [{"views": 1, "aggregator_s": 0.05, "heads_s": 0.02, "total_s": 0.07, "tflop_per_s": 44.0,
             "aggregator_peak_gb": 5.1, "peak_gb": 5.3},
            {"views": 100, "error": "out of memory: CUDA out of memory"}]
    table = speed_table(rows).splitlines()
    assert len(table) == 2 + len({1, 100} | set(VGGT_H100))
    assert "| 1 | 0.050 | 0.020 | 0.070 | 44.0 | 5.1 | 5.3 | 0.04 | 1.9 |" in table
    assert "| 100 | out of memory: CUDA out of memory |  |  |  |  |  | 3.12 | 21.2 |" in table
    assert "| 10 | not measured |  |  |  |  |  | 0.14 | 3.6 |" in table
