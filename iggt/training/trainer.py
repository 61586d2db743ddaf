"""Training of IGGT with `accelerate`: one CPU, one GPU, DDP or several nodes (``accelerate launch``).

A run is described by a `TrainConfig` (read from YAML, see ``configs/``) and writes into its
``run.output_dir``::

    train_config.yaml        the resolved configuration
    checkpoints/step_000500  `Accelerator.save_state` (model, optimizer, scheduler, RNG) + progress.json
    logs/                    TensorBoard
    model/                   the final export (`iggt.loading.save_model`: safetensors + config.json)

Reproducibility. Every optimizer step draws its data and its random numbers from
``(seed, step)`` only: the batches come from `SameShapeBatchSampler`'s seeded stream (resumed at
the step's batch), and the torch seed and the instance-loss pixel sampling are reset at the
start of every step. A run
that stops and resumes from a checkpoint therefore ends with the same weights as one that never
stopped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

import torch
import yaml
from torch.utils.data import DataLoader

from iggt.config import IGGTConfig
from iggt.errors import IGGTError
from iggt.progress import Progress
from iggt.training.dataset import DatasetConfig, SameShapeBatchSampler, SceneDataset, collate_views
from iggt.training.losses import LossConfig, compute_losses


# --------------------------------------------------------------------------- configuration


@dataclass
class ModelSection:
    """Which network to train and where its first weights come from."""

    preset: str = "small"
    """`IGGTConfig` preset (``tiny``, ``small``, ``iggt-1b``)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """`IGGTConfig` fields changed on top of the preset (e.g. ``gradient_checkpointing: true``)."""
    init: str = "scratch"
    """``scratch``; ``vggt`` or ``iggt`` (official weights through `iggt.loading`); or a
    folder written by `save_model` or a checkpoint file, whose shapes must match the preset."""
    init_weights: str | None = None
    """Local weights file for ``vggt``/``iggt`` (without it the loader fetches them from the Hub)."""


@dataclass
class DataSection:
    """Where the training scenes are and how they are drawn (see `iggt.training.dataset`)."""

    root: str = "data/train"
    """Folder of scene records (``python -m iggt generate``), relative to the working directory."""
    images_per_batch: int = 8
    """Images per micro-batch and process: a batch of S-view samples holds images_per_batch // S samples."""
    view_range: tuple[int, int] = (2, 8)
    """Each batch draws its view count in this range."""
    num_workers: int = 0
    samples: DatasetConfig = field(default_factory=DatasetConfig)
    """Image size, crops, view selection and colour jitter of the samples."""


@dataclass
class OptimSection:
    """AdamW with a backbone and a heads learning rate, linear warm-up then cosine decay."""

    steps: int = 1000
    """Optimizer steps of the whole run."""
    lr_backbone: float = 1e-6
    """Learning rate of the aggregator (patch embedder and alternating attention)."""
    lr_heads: float = 1e-5
    """Learning rate of the camera, depth, point and instance heads."""
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    """The cosine decays to this fraction of each learning rate."""
    grad_clip: float = 1.0
    """Maximum global gradient norm (0 = no clipping)."""
    gradient_accumulation_steps: int = 1
    freeze_backbone: bool = False


@dataclass
class RunSection:
    """Bookkeeping: output, seeding, precision, checkpoints, logs, export."""

    output_dir: str = "runs/iggt"
    seed: int = 0
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """``auto``: bf16 on a GPU, none on the CPU."""
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    max_minutes: float | None = None
    """Stop early (checkpoint and export as usual) once the run has taken this long."""
    export_dtype: Literal["float32", "float16"] = "float32"
    """Dtype of the exported weights (float16 halves the file; loading casts back)."""


@dataclass
class TrainConfig:
    """A complete training recipe; `TrainConfig.from_yaml` reads one from a file."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossConfig = field(default_factory=LossConfig)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self) -> None:
        problems = []
        if self.optim.steps < 1:
            problems.append(f"optim.steps must be at least 1, got {self.optim.steps}")
        if not 0 <= self.optim.warmup_steps <= self.optim.steps:
            problems.append(f"optim.warmup_steps must lie in 0..optim.steps, got {self.optim.warmup_steps}")
        if self.optim.gradient_accumulation_steps < 1:
            problems.append("optim.gradient_accumulation_steps must be at least 1")
        if self.data.images_per_batch < 1:
            problems.append("data.images_per_batch must be at least 1")
        if min(self.run.checkpoint_every, self.run.log_every, self.run.keep_checkpoints) < 1:
            problems.append("run.checkpoint_every, run.log_every and run.keep_checkpoints must be at least 1")
        if problems:
            raise IGGTError("invalid training config: " + "; ".join(problems))

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] = ()) -> "TrainConfig":
        """Read a YAML recipe, then apply ``section.key=value`` overrides (values parsed as YAML)."""
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"training config not found: {path}") from None
        except yaml.YAMLError as error:
            raise IGGTError(f"{path} is not valid YAML: {error}") from None
        if not isinstance(values, dict):
            raise IGGTError(f"{path}: a training config is a mapping of sections (model, data, optim, loss, run)")
        for override in overrides:
            apply_override(values, override)
        try:
            return build_dataclass(cls, values, "")
        except ValueError as error:
            raise IGGTError(f"{path}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def apply_override(values: dict, override: str) -> None:
    """Set ``a.b.c=value`` in a nested dict; the value is parsed as YAML (``1e-4``, ``true``, ``[1, 2]``)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise IGGTError(f"an override looks like section.key=value, got {override!r}")
    *parents, leaf = key.strip().split(".")
    target = values
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise IGGTError(f"override {override!r}: {part} is not a section")
    target[leaf] = yaml.safe_load(raw)


def build_dataclass(cls: type, values: Any, where: str) -> Any:
    """Instantiate a (nested) config dataclass from plain values, converting and checking types.

    Unknown keys and values of the wrong type raise a `ValueError` naming the key.
    """
    if not isinstance(values, Mapping):
        raise IGGTError(f"{where or 'the config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        section = f" in section {where!r}" if where else ""
        raise IGGTError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}{section}; "
                         f"known keys: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _convert(hints[name], value, key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise IGGTError(str(error)) from None


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key)
    if origin is Literal:
        word = "yes" if value is True else "no" if value is False else None
        if word in args:
            value = word  # YAML reads an unquoted no (yes, off, on) as a boolean
        if value not in args:
            raise IGGTError(f"{key} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise IGGTError(f"{key} must be a list of {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, key) for a, v in zip(args, value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise IGGTError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise IGGTError(f"{key} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        # YAML reads "1e-6" (no dot) as a string, so numbers are also accepted as text.
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if math.isnan(number) or (hint is int and number != int(number)):
            raise IGGTError(f"{key} must be {'an integer' if hint is int else 'a number'}, got {value!r}")
        return hint(number)
    if hint is str:
        if not isinstance(value, str):
            raise IGGTError(f"{key} must be text, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} for {key}")


# --------------------------------------------------------------------------- schedule


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate factor: linear from 1/(warmup+1) to 1 over the warm-up, then cosine to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """Runs one `TrainConfig`: ``Trainer(config).train(resume=...)`` returns the exported model folder."""

    def __init__(self, config: TrainConfig):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        self.config = config
        self.output_dir = Path(config.run.output_dir)
        precision = config.run.mixed_precision
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() else "no"
        self.accelerator = Accelerator(
            mixed_precision=precision,
            gradient_accumulation_steps=config.optim.gradient_accumulation_steps,
            step_scheduler_with_optimizer=False,
            log_with="tensorboard",
            project_config=ProjectConfiguration(project_dir=str(self.output_dir),
                                                logging_dir=str(self.output_dir / "logs")),
        )

    # -- construction ------------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        """The network of ``model.preset`` + ``overrides``, initialised as ``model.init`` says;
        the backbone frozen if asked."""
        from iggt.loading import load_checkpoint_file, load_official_weights
        from iggt.model.iggt import IGGT

        section = self.config.model
        try:
            model_config = IGGTConfig.from_preset(section.preset).replace(**section.overrides)
        except ValueError as error:  # an unknown preset or field of the recipe
            raise IGGTError(f"model: {error}") from None
        if section.init == "scratch":
            model = IGGT(model_config)
        elif section.init in ("vggt", "iggt"):
            model = IGGT(model_config)
            load_official_weights(model, section.init, section.init_weights)
        else:
            path = Path(section.init)
            weights = path / "model.safetensors" if path.is_dir() else path
            if not weights.is_file():
                raise FileNotFoundError(f"model.init must be scratch, vggt, iggt, a folder written by save_model "
                                        f"or a checkpoint file; {weights} does not exist")
            model, _ = load_checkpoint_file(weights, model_config)
        if self.config.optim.freeze_backbone:
            model.aggregator.requires_grad_(False)
        return model.train()

    def build_optimizer(self, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """AdamW with two parameter groups (backbone = aggregator, heads = the rest)."""
        optim = self.config.optim
        backbone = [p for p in model.aggregator.parameters() if p.requires_grad]
        backbone_ids = {id(p) for p in model.aggregator.parameters()}
        heads = [p for p in model.parameters() if p.requires_grad and id(p) not in backbone_ids]
        groups = [{"params": heads, "lr": optim.lr_heads, "name": "heads"}]
        if backbone:
            groups.append({"params": backbone, "lr": optim.lr_backbone, "name": "backbone"})
        optimizer = torch.optim.AdamW(groups, betas=optim.betas, weight_decay=optim.weight_decay)
        schedule = lambda step: warmup_cosine(step, optim.warmup_steps, optim.steps, optim.min_lr_ratio)  # noqa: E731
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def build_loader(self, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
        """Endless batches for this process, starting at the data of ``start_step``."""
        data = self.config.data
        dataset = SceneDataset(data.root, data.samples, seed=self.config.run.seed)
        batches_per_step = self.config.optim.gradient_accumulation_steps * self.accelerator.num_processes
        sampler = SameShapeBatchSampler(
            dataset, images_per_batch=data.images_per_batch, view_range=data.view_range, seed=self.config.run.seed,
            endless=True, start_batch=start_step * batches_per_step,
            rank=self.accelerator.process_index, world_size=self.accelerator.num_processes)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_views, num_workers=data.num_workers,
                            persistent_workers=data.num_workers > 0)
        return iter(loader)

    # -- checkpoints ---------------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.output_dir / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.checkpoint_root.glob("step_*"))
        found = [f for f in found if (f / "progress.json").is_file()]
        return found[-1] if found else None

    def save_checkpoint(self, step: int) -> None:
        folder = self.checkpoint_root / f"step_{step:07d}"
        self.accelerator.save_state(str(folder))
        if self.accelerator.is_main_process:
            (folder / "progress.json").write_text(json.dumps({"step": step}))
            for old in sorted(self.checkpoint_root.glob("step_*"))[:-self.config.run.keep_checkpoints]:
                shutil.rmtree(old)
        self.accelerator.wait_for_everyone()

    def export(self, model: torch.nn.Module) -> Path:
        """`save_model` into ``output_dir/model`` (in ``run.export_dtype``)."""
        from iggt.loading import save_model

        folder = self.output_dir / "model"
        if self.accelerator.is_main_process:
            dtype = torch.float16 if self.config.run.export_dtype == "float16" else None
            save_model(self.accelerator.unwrap_model(model), folder, dtype=dtype)
        self.accelerator.wait_for_everyone()
        return folder

    # -- the loop ----------------------------------------------------------------------------
    def _step_seed(self, step: int) -> int:
        return self.config.run.seed * 1_000_003 + step

    def _seed_step(self, step: int) -> None:
        """Reset the global random state for ``step`` (the same on every process)."""
        torch.manual_seed(self._step_seed(step))

    def _pixel_generator(self, step: int, micro_step: int) -> torch.Generator:
        """The generator of the loss's pixel sampling for one micro-batch.

        It depends on the micro-batch's global index, the position of its data in the sampler
        (``micro_step * num_processes + process_index``), so N processes with A accumulation
        steps draw the same pixels as one process with N * A accumulation steps.
        """
        index = micro_step * self.accelerator.num_processes + self.accelerator.process_index
        return torch.Generator().manual_seed(self._step_seed(step) * 1009 + index + 1)

    def train(self, resume: bool = False, progress: Progress | None = None) -> Path:
        """Train until ``optim.steps`` (or ``run.max_minutes``); returns the exported model folder."""
        from tqdm.auto import tqdm

        config, accelerator = self.config, self.accelerator
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "train_config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        self._seed_step(0)
        model = self.build_model()
        optimizer, scheduler = self.build_optimizer(model)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

        start_step = 0
        if resume:
            checkpoint = self.latest_checkpoint()
            if checkpoint is None:
                raise FileNotFoundError(f"--resume: no checkpoint under {self.checkpoint_root}")
            accelerator.load_state(str(checkpoint))
            start_step = json.loads((checkpoint / "progress.json").read_text())["step"]
        batches = self.build_loader(start_step)
        accelerator.init_trackers("iggt", config={"preset": config.model.preset, "steps": config.optim.steps})

        started = time.monotonic()
        bar = tqdm(total=config.optim.steps, initial=start_step, desc="train", disable=not accelerator.is_main_process)
        step = start_step
        since_log: list[dict[str, float]] = []
        model.train()
        while step < config.optim.steps:
            losses = self._optimizer_step(model, optimizer, scheduler, batches, step)
            since_log.append(losses)
            step += 1
            bar.update(1)
            if step % config.run.log_every == 0 or step == config.optim.steps:
                logged = {f"train/{k}": sum(entry[k] for entry in since_log) / len(since_log) for k in losses}
                logged.update({f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups})
                accelerator.log(logged, step=step)
                bar.set_postfix(loss=f"{logged['train/total']:.4f}")
                since_log.clear()
            if progress is not None:
                progress(step / config.optim.steps, f"step {step}/{config.optim.steps} loss {losses['total']:.4f}")
            out_of_time = self._out_of_time(started)
            if step % config.run.checkpoint_every == 0 or step == config.optim.steps or out_of_time:
                self.save_checkpoint(step)
            if out_of_time:
                bar.write(f"stopping after {step} steps: run.max_minutes = {config.run.max_minutes} reached")
                break
        bar.close()
        folder = self.export(model)
        accelerator.end_training()  # last: it also ends the process group of a distributed run
        return folder

    def _out_of_time(self, started: float) -> bool:
        """Whether ``run.max_minutes`` has passed, decided by all processes together: were each
        to look at its own clock, one would stop to checkpoint while another waited for the
        next step's gradients, and a distributed run would hang."""
        limit = self.config.run.max_minutes
        if limit is None:
            return False
        if time.monotonic() - started > 60 * limit:
            self.accelerator.set_trigger()
        return self.accelerator.check_trigger()

    def _optimizer_step(self, model, optimizer, scheduler, batches, step: int) -> dict[str, float]:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches; returns the mean
        losses and the gradient norm (before clipping)."""
        accelerator = self.accelerator
        self._seed_step(step)
        totals: dict[str, float] = {}
        micro_steps = self.config.optim.gradient_accumulation_steps
        for micro_step in range(micro_steps):
            batch = {k: v.to(accelerator.device) for k, v in next(batches).items() if isinstance(v, torch.Tensor)}
            with accelerator.accumulate(model):
                predictions = model(batch["images"])
                losses = compute_losses(predictions, batch, self.config.loss, self._pixel_generator(step, micro_step))
                accelerator.backward(losses["total"])
                if accelerator.sync_gradients and self.config.optim.grad_clip > 0:
                    norm = accelerator.clip_grad_norm_(model.parameters(), self.config.optim.grad_clip)
                    totals["grad_norm"] = float(norm)  # before clipping
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + value.item() / micro_steps
        return totals
