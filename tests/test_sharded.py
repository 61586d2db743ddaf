"""Datasets over several processes: ``evaluate`` and ``reconstruct --each-scene`` sharded, gathered, resumable.

The processes are CPU processes (gloo) started by torchrun, as ``accelerate launch`` starts them,
on one node or on two "nodes" on 127.0.0.1: the code path of several GPUs and machines.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import run_distributed, write_synthetic_photos
from iggt.data.scene_format import save_scene_record
from iggt.data.synthetic import GeneratorConfig, generate_scene

SCENES = GeneratorConfig(num_views=2, image_size=(56, 56), object_count=(2, 3))
TIMEOUT_S = 400


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """Five scene records, one of them in a nested folder (records are found recursively)."""
    data = tmp_path_factory.mktemp("records")
    for index, seed in enumerate(range(10_000, 10_005)):
        save_scene_record(generate_scene(seed, SCENES), data / ("nested" if index == 4 else "") / f"scene_{index}")
    return data


def launch(arguments: list[str], *, nodes: int = 1, processes_per_node: int = 1) -> list[str]:
    """``torchrun -m iggt ARGUMENTS`` on CPU processes; the output of each node's launcher."""
    return run_distributed(["-m", "iggt", *arguments], nodes=nodes, processes_per_node=processes_per_node,
                           timeout=TIMEOUT_S)


def evaluate_arguments(data: Path, checkpoint: Path, out: Path) -> list[str]:
    return ["evaluate", "--data", str(data), "--checkpoint", str(checkpoint), "--out", str(out), "--no-baselines",
            "--clustering", "medium", "--device", "cpu"]


def without_timings(metrics: dict) -> dict:
    """metrics.json less what depends on the clock."""
    metrics = json.loads(json.dumps(metrics))
    metrics["aggregate"].pop("seconds")
    for scene in metrics["scenes"]:
        scene.pop("seconds")
    return metrics


def scenes_by_name(metrics: dict) -> dict[str, dict]:
    return {scene["name"]: scene for scene in metrics["scenes"]}


@pytest.fixture(scope="module")
def one_process(records, tiny_checkpoint, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("one")
    launch(evaluate_arguments(records, tiny_checkpoint, out))
    return json.loads((out / "metrics.json").read_text())


def test_two_processes_give_the_metrics_of_one(records, tiny_checkpoint, one_process, tmp_path):
    outputs = launch(evaluate_arguments(records, tiny_checkpoint, tmp_path), processes_per_node=2)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["scenes_evaluated"] == 5
    assert [scene["name"] for scene in metrics["scenes"]] == [scene["name"] for scene in one_process["scenes"]]
    assert without_timings(metrics) == without_timings(one_process)
    assert outputs[0].count("5 scenes evaluated") == 1  # the main process alone reports
    assert len(list((tmp_path / "scenes").glob("*.json"))) == 5 + 1  # each scene's result and the settings
    report = (tmp_path / "report.md").read_text()
    assert report.count("](masks_") == 3


def test_two_nodes_give_the_metrics_of_one(records, tiny_checkpoint, one_process, tmp_path):
    launch(evaluate_arguments(records, tiny_checkpoint, tmp_path), nodes=2)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert without_timings(metrics) == without_timings(one_process)


def test_a_stopped_evaluation_resumes_with_the_scenes_left(records, tiny_checkpoint, tmp_path, capsys):
    from iggt.__main__ import main

    arguments = evaluate_arguments(records, tiny_checkpoint, tmp_path)
    assert main(arguments) == 0
    first = json.loads((tmp_path / "metrics.json").read_text())
    # A saved scene is reused as it is (here: a figure marked by hand), a missing one is computed again.
    saved = tmp_path / "scenes" / "scene_0.json"
    marked = json.loads(saved.read_text())
    marked["result"]["geometry"]["abs_rel_view"] = 123.0
    saved.write_text(json.dumps(marked))
    removed = tmp_path / "scenes" / "nested__scene_4.json"
    name, removed_name = marked["result"]["name"], json.loads(removed.read_text())["result"]["name"]
    removed.unlink()
    assert main(arguments) == 0
    second = scenes_by_name(json.loads((tmp_path / "metrics.json").read_text()))
    assert second[name]["geometry"]["abs_rel_view"] == 123.0
    assert second[removed_name]["geometry"] == scenes_by_name(first)[removed_name]["geometry"]
    assert (tmp_path / "scenes" / "nested__scene_4.json").is_file()
    # Other settings do not reuse the saved scenes.
    capsys.readouterr()
    assert main([*arguments[:-4], "--clustering", "small", "--device", "cpu"]) == 0
    assert "starting afresh" in capsys.readouterr().out
    third = scenes_by_name(json.loads((tmp_path / "metrics.json").read_text()))
    assert third[name]["geometry"]["abs_rel_view"] != 123.0


def test_reconstruct_each_scene_over_two_processes_then_resumes(tiny_checkpoint, tmp_path):
    scenes = tmp_path / "scenes"
    for index in range(3):
        write_synthetic_photos(scenes / f"room_{index}", seed=20_000 + index, views=2, size=56)
    (scenes / "notes.txt").write_text("not a scene")
    out = tmp_path / "out"
    arguments = ["reconstruct", str(scenes), "--each-scene", "--out", str(out), "--checkpoint", str(tiny_checkpoint),
                 "--size", "28", "--clustering", "none", "--formats", "json,scene", "--device", "cpu"]
    launch(arguments, processes_per_node=2)
    summary = json.loads((out / "summary.json").read_text())
    assert [scene["scene"] for scene in summary["scenes"]] == ["room_0", "room_1", "room_2"]
    assert summary["scenes_failed"] == 0 and all(scene["views"] == 2 for scene in summary["scenes"])
    for scene in summary["scenes"]:
        for file in scene["files"].values():
            assert (out / scene["scene"] / file).is_file()
    cameras = np.load(out / "room_1" / summary["scenes"][1]["files"]["scene"])["extrinsics"]
    assert cameras.shape == (2, 3, 4)

    (out / "room_2" / "reconstruct.json").unlink()  # as if stopped before room_2 was done
    output = launch(arguments)[0]
    assert output.count("views at 28x28") == 1  # only room_2 was reconstructed again
    assert json.loads((out / "summary.json").read_text()) == summary


def test_a_command_leaves_the_process_group_it_ran_in(tmp_path):
    """Every command ends the launch's process group before the interpreter exits: a group left to the exit can
    abort (SIGABRT) a process whose work is all done, as it once did a CI run of the test above."""
    import torch.distributed as distributed

    from iggt.__main__ import main

    distributed.init_process_group("gloo", store=distributed.HashStore(), rank=0, world_size=1)
    try:
        assert main(["reconstruct", str(tmp_path / "no such folder"), "--out", str(tmp_path / "out")]) == 2
        assert not distributed.is_initialized()
    finally:
        if distributed.is_initialized():
            distributed.destroy_process_group()
