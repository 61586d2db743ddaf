"""The training recipe format, the schedule, the data order, and real (tiny) training runs."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from helpers import run_distributed
from iggt.training.trainer import TrainConfig, warmup_cosine

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("name", ["small-cpu.yaml", "paper-1b.yaml"])
def test_shipped_recipes_load(name):
    config = TrainConfig.from_yaml(REPO / "configs" / name)
    assert config.optim.steps > config.optim.warmup_steps
    assert config.loss.pull_weight == 2.0 and config.loss.push_weight == 1.0 and config.loss.push_margin == 1.0


def test_paper_recipe_matches_the_paper():
    config = TrainConfig.from_yaml(REPO / "configs" / "paper-1b.yaml")
    assert (config.model.preset, config.model.init, config.run.mixed_precision) == ("iggt-1b", "vggt", "bf16")
    assert (config.optim.lr_backbone, config.optim.lr_heads) == (1e-6, 1e-5)
    assert tuple(config.data.view_range) == (1, 12) and config.data.images_per_batch == 24  # 1-12 frames, 24 images
    assert config.model.overrides.get("apply_discarded_cross_attention", False) is False  # the released head


def test_yaml_values_and_overrides_are_converted(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("optim:\n  lr_heads: 1e-4\n  steps: 50\n  warmup_steps: 5\nloss:\n  background: ignore\n")
    config = TrainConfig.from_yaml(recipe, ["optim.steps=20", "run.max_minutes=1.5", "optim.betas=[0.8, 0.9]",
                                            "run.mixed_precision=no"])
    assert config.optim.lr_heads == pytest.approx(1e-4)  # YAML alone reads "1e-4" as text
    assert config.run.mixed_precision == "no"  # and an unquoted no as false
    assert config.optim.steps == 20
    assert config.run.max_minutes == 1.5
    assert config.optim.betas == (0.8, 0.9)
    assert config.loss.background == "ignore"


@pytest.mark.parametrize("text, message", [
    ("optim:\n  learning_rate: 0.1\n", "unknown key learning_rate in section 'optim'"),
    ("optimizer: {}\n", "unknown key optimizer"),
    ("optim:\n  steps: many\n", "optim.steps must be an integer"),
    ("optim:\n  steps: 2.5\n", "optim.steps must be an integer"),
    ("run:\n  mixed_precision: fp8\n", "run.mixed_precision must be one of"),
    ("optim:\n  freeze_backbone: 1\n", "optim.freeze_backbone must be true or false"),
    ("optim:\n  steps: 10\n  warmup_steps: 20\n", "warmup_steps"),
    ("loss:\n  background: sky\n", "background"),
    ("- a\n- b\n", "mapping of sections"),
])
def test_bad_recipes_get_a_clear_message_naming_the_file(tmp_path, text, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(ValueError) as error:
        TrainConfig.from_yaml(recipe)
    assert message in str(error.value)
    assert "bad.yaml" in str(error.value)


def test_bad_override_and_missing_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("{}\n")
    with pytest.raises(ValueError, match="section.key=value"):
        TrainConfig.from_yaml(recipe, ["steps"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- schedule


def test_warmup_then_cosine():
    factors = [warmup_cosine(step, 4, 14, 0.1) for step in range(16)]
    assert factors[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factors[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factors[14] == pytest.approx(0.1) and factors[15] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))


# --------------------------------------------------------------------------- real training runs (tiny preset)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    from iggt.data.synthetic import GeneratorConfig, generate_dataset

    root = tmp_path_factory.mktemp("scenes")
    generate_dataset(root, 3, seed=5, config=GeneratorConfig(num_views=3, image_size=(32, 32)), progress=False)
    return root


def _tiny_recipe(scenes: Path, output: Path, steps: int = 2) -> list[str]:
    return [f"data.root={scenes}", f"run.output_dir={output}", "model.preset=tiny", "model.overrides={}",
            f"optim.steps={steps}",
            "optim.warmup_steps=1", "data.images_per_batch=2", "data.view_range=[2, 2]", "data.num_workers=0",
            "data.samples.image_size=28", "loss.pixels_per_view=64", "run.checkpoint_every=100",
            "run.export_dtype=float32", "optim.lr_heads=1e-3", "optim.lr_backbone=1e-3"]


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_interrupted_and_resumed_run_ends_with_the_same_weights(scenes, tmp_path):
    from iggt.training.trainer import Trainer

    recipe = REPO / "configs" / "small-cpu.yaml"
    whole = Trainer(TrainConfig.from_yaml(recipe, _tiny_recipe(scenes, tmp_path / "whole"))).train()

    # max_minutes=0 stops (with a checkpoint) right after the first step, as an interruption would
    parts = tmp_path / "parts"
    Trainer(TrainConfig.from_yaml(recipe, _tiny_recipe(scenes, parts) + ["run.max_minutes=0"])).train()
    assert [p.name for p in (parts / "checkpoints").iterdir()] == ["step_0000001"]
    resumed = Trainer(TrainConfig.from_yaml(recipe, _tiny_recipe(scenes, parts))).train(resume=True)

    expected, actual = _weights(whole), _weights(resumed)
    assert expected.keys() == actual.keys()
    initial = _weights(parts / "checkpoints" / "step_0000001")
    assert any(not (initial[k] == expected[k]).all() for k in expected)  # training changed the weights
    for name in expected:
        assert (expected[name] - actual[name]).abs().max().item() <= 1e-6, name


# --------------------------------------------------------------------------- distributed runs


def _torchrun(recipe: list[str], *, nodes: int, processes_per_node: int, resume: bool = False,
              program: list[str] = ("-m", "iggt"), timeout: float = 300) -> None:
    """``torchrun -m iggt train`` with DDP on CPU processes (gloo), all nodes on this machine:
    the code path of several GPUs or nodes, with another collective backend."""
    outputs = run_distributed([*program, "train", "--config", str(REPO / "configs" / "small-cpu.yaml"), *recipe,
                               *(["--resume"] if resume else [])],
                              nodes=nodes, processes_per_node=processes_per_node, timeout=timeout)
    for rank, output in enumerate(outputs):
        assert output.count("model saved to") == (1 if rank == 0 else 0)  # printed by the main process only


def _largest_parameter_difference(expected: Path, actual: Path) -> float:
    """Over the learned weights; BatchNorm statistics differ by design (DDP keeps rank 0's)."""
    expected, actual = _weights(expected), _weights(actual)
    assert expected.keys() == actual.keys()
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    return max((expected[name] - actual[name]).abs().max().item() for name in expected if not name.endswith(statistics))


# Summation order (all-reduce vs accumulation) may move weights by ~1e-6 after two Adam steps
# of 1e-3; training on different data moves them by ~1e-3.
SAME_RUN_TOLERANCE = 2e-5


@pytest.fixture(scope="module")
def accumulated_run(scenes, tmp_path_factory) -> Path:
    """The reference of the distributed runs: one process, 2 accumulation steps per optimizer
    step (launched the same way, so that it computes with the same thread count)."""
    output = tmp_path_factory.mktemp("accumulated")
    _torchrun(_tiny_recipe(scenes, output) + ["optim.gradient_accumulation_steps=2"], nodes=1, processes_per_node=1)
    return output / "model"


def test_two_process_ddp_interrupted_and_resumed_equals_one_process_with_accumulation(scenes, accumulated_run, tmp_path):
    recipe = _tiny_recipe(scenes, tmp_path / "ddp")
    _torchrun(recipe + ["run.max_minutes=0"], nodes=1, processes_per_node=2)  # stops after step 1
    assert [p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()] == ["step_0000001"]
    _torchrun(recipe, nodes=1, processes_per_node=2, resume=True)
    assert _largest_parameter_difference(accumulated_run, tmp_path / "ddp" / "model") < SAME_RUN_TOLERANCE


def test_two_nodes_equal_one_process_with_accumulation(scenes, accumulated_run, tmp_path):
    from iggt.training.trainer import Trainer

    _torchrun(_tiny_recipe(scenes, tmp_path / "nodes"), nodes=2, processes_per_node=1)
    assert _largest_parameter_difference(accumulated_run, tmp_path / "nodes" / "model") < SAME_RUN_TOLERANCE
    # one process without accumulation sees half the data per step: clearly another result
    alone = Trainer(TrainConfig.from_yaml(REPO / "configs" / "small-cpu.yaml", _tiny_recipe(scenes, tmp_path / "one"))).train()
    assert _largest_parameter_difference(accumulated_run, alone) > 50 * SAME_RUN_TOLERANCE


SKEWED_CLOCK = """
import os, sys, time, types
import iggt.training.trainer as trainer
from iggt.__main__ import main

if os.environ["RANK"] == "1":  # once training has started, this process's clock is an hour ahead
    calls = iter(range(10**9))
    trainer.time = types.SimpleNamespace(monotonic=lambda: time.monotonic() + (3600 if next(calls) else 0))
sys.exit(main(sys.argv[1:]))
"""


def test_time_limit_reached_by_one_process_stops_all_together(scenes, tmp_path):
    """``run.max_minutes`` passed on one process only: every process stops after the same step
    with one complete checkpoint (deciding alone, they would wait for each other forever)."""
    script = tmp_path / "skewed_clock.py"
    script.write_text(SKEWED_CLOCK)
    _torchrun(_tiny_recipe(scenes, tmp_path / "run", steps=3) + ["run.max_minutes=60"],
              nodes=1, processes_per_node=2, program=[str(script)], timeout=120)
    (checkpoint,) = (tmp_path / "run" / "checkpoints").iterdir()
    assert checkpoint.name == "step_0000001" and (checkpoint / "progress.json").is_file()
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_bf16_mixed_precision_trains_close_to_fp32(scenes, tmp_path):
    """The GPU recipe's bf16 autocast, run on the CPU: the stored weights stay fp32, and two steps
    land near the fp32 run but not on it (so autocast really computed in bf16). Each run is a
    process of its own: accelerate fixes the precision once per process."""
    def run(precision: str) -> Path:
        _torchrun(_tiny_recipe(scenes, tmp_path / precision) + [f"run.mixed_precision={precision}"],
                  nodes=1, processes_per_node=1)
        return tmp_path / precision / "model"

    bf16, fp32 = run("bf16"), run("no")
    assert {str(v.dtype) for v in _weights(bf16).values()} <= {"torch.float32", "torch.int64"}
    assert 1e-5 < _largest_parameter_difference(fp32, bf16) < 2e-2


def test_resume_without_checkpoint_is_a_clear_error(scenes, tmp_path):
    from iggt.training.trainer import Trainer

    config = TrainConfig.from_yaml(REPO / "configs" / "small-cpu.yaml", _tiny_recipe(scenes, tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(config).train(resume=True)


def test_cli_generates_scenes_and_trains_the_tiny_preset(tmp_path):
    import subprocess
    import sys

    import torch

    from iggt.config import IGGTConfig
    from iggt.loading import load_model

    data, run = tmp_path / "data", tmp_path / "run"
    command = [sys.executable, "-m", "iggt"]
    subprocess.run(command + ["generate", "--out", str(data), "--count", "2", "--seed", "1", "--views", "2",
                              "--size", "32", "32"], check=True, cwd=REPO, capture_output=True)
    assert len(list(data.iterdir())) == 2
    result = subprocess.run(command + ["train", "--config", "configs/small-cpu.yaml"]
                            + _tiny_recipe(data, run, steps=1) + ["run.export_dtype=float16"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"model saved to {run / 'model'}" in result.stdout
    assert {t.dtype for t in _weights(run / "model").values() if t.is_floating_point()} == {torch.float16}
    model = load_model(run / "model")
    assert model.config == IGGTConfig.from_preset("tiny")
    assert next(model.parameters()).dtype == torch.float32  # loading casts the half weights back


def test_init_from_our_export_or_official_weights_and_frozen_backbone(tmp_path):
    import torch

    from iggt.config import IGGTConfig
    from iggt.loading import save_model
    from iggt.model.iggt import IGGT
    from iggt.training.trainer import Trainer

    torch.manual_seed(3)
    source = IGGT(IGGTConfig.from_preset("tiny"))
    save_model(source, tmp_path / "export")
    config = TrainConfig.from_yaml(REPO / "configs" / "small-cpu.yaml", [
        "model.preset=tiny", "model.overrides={}", f"model.init={tmp_path / 'export'}", "optim.freeze_backbone=true",
        f"run.output_dir={tmp_path / 'run'}"])
    trainer = Trainer(config)
    model = trainer.build_model()
    for name, tensor in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    # the official-weights path reads the same names (ours follow the released checkpoint)
    official = TrainConfig.from_yaml(REPO / "configs" / "small-cpu.yaml", [
        "model.preset=tiny", "model.overrides={}", "model.init=iggt",
        f"model.init_weights={tmp_path / 'export' / 'model.safetensors'}", f"run.output_dir={tmp_path / 'run'}"])
    from_official = Trainer(official).build_model()
    for name, tensor in source.state_dict().items():
        assert torch.equal(from_official.state_dict()[name], tensor), name
    assert not any(p.requires_grad for p in model.aggregator.parameters())
    optimizer, scheduler = trainer.build_optimizer(model)
    assert [g["name"] for g in optimizer.param_groups] == ["heads"]
    trained = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert trained == sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.aggregator.parameters())
    assert scheduler.get_last_lr() == [pytest.approx(config.optim.lr_heads / (config.optim.warmup_steps + 1))]

    missing = TrainConfig.from_yaml(REPO / "configs" / "small-cpu.yaml", [f"model.init={tmp_path / 'nothing'}"])
    with pytest.raises(FileNotFoundError, match="nothing"):
        Trainer(missing).build_model()
