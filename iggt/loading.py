"""Models from checkpoints and back: the one route from "a name, folder, file or Hub id" to an `IGGT`.

`load_model(spec)` accepts a preset name (random weights), a folder written by `save_model`, a
checkpoint file (ours, the released IGGT, VGGT-1B) or a Hub repository id (``owner/name``, or
``owner/name:filename`` for one file of it). `save_model` writes
the folder format (``config.json`` + ``model.safetensors``) that `load_model` reads back; upload
such a folder with ``huggingface_hub.upload_folder`` to share it on the Hub.

Official files load as the release's own demo loads them (``strict=False``): extra entries and
missing entries that nothing reads are reported and accepted; a missing entry that the forward
pass reads is refused, by name. The file I/O and the report are `iggt.checkpoints`. The point
tracker (``track_head.*``) loads into models that have one; a model without one (``small``,
``tiny``, the shipped model) skips those entries and its report says it has no tracker.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from .checkpoints import (
    CONFIG_NAME,
    INSTANCE_BRANCH_PREFIXES,
    OFFICIAL_REPO_ID,
    TRACKER_PREFIX,
    VGGT_FILENAME,
    VGGT_REPO_ID,
    CheckpointError,
    HubFile,
    HubSpec,
    LoadReport,
    apply_state_dict,
    checkpoint_file_in_folder,
    checkpoint_file_in_repo,
    hub_download,
    parse_hub_spec,
    read_config,
    read_state_dict,
    write_checkpoint,
)
from .config import PRESETS, IGGTConfig
from .model.iggt import IGGT

logger = logging.getLogger(__name__)


def save_model(model: IGGT, folder: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` as ``config.json`` + ``model.safetensors`` (optionally cast, e.g. to float16)."""
    state = model.state_dict()
    if dtype is not None:
        state = {name: t.to(dtype) if t.is_floating_point() else t for name, t in state.items()}
    return write_checkpoint(folder, model.config, state)


def _model_for(config: IGGTConfig, state_dict: dict[str, Tensor]) -> IGGT:
    """A model ready to receive ``state_dict``.

    When the checkpoint covers every entry with the right shape, the model is built on the
    meta device and takes the checkpoint's tensors directly (no random initialisation and no
    second copy of the weights: for the 1B model that saves about a minute and 5 GB). Otherwise
    it is built normally, so entries the file lacks keep a proper initialisation.
    """
    with torch.device("meta"):
        model = IGGT(config)
    expected = model.state_dict()
    if any(name not in state_dict or tuple(state_dict[name].shape) != tuple(tensor.shape)
           for name, tensor in expected.items()):
        return IGGT(config)
    model.load_state_dict({name: state_dict[name].to(tensor.dtype) for name, tensor in expected.items()},
                          strict=True, assign=True)
    model.aggregator.restore_constants("cpu")
    on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if on_meta:
        raise RuntimeError(f"entries left uninitialised after loading: {', '.join(on_meta)}")
    return model


NO_TRACKER_NOTE = "no point tracker (config track_head = false): tracks need weights with track_head.*"


def _apply(model: IGGT, state_dict: dict[str, Tensor], source: str, strict: bool, is_vggt: bool) -> LoadReport:
    has_tracker = model.track_head is not None
    report = apply_state_dict(
        model, state_dict, source=source, strict=strict, unused=model.state_entries_unused_by_forward(),
        allowed_missing=INSTANCE_BRANCH_PREFIXES if is_vggt else (),
        skipped_prefixes=() if has_tracker else (TRACKER_PREFIX,),
    )
    if not has_tracker:
        report.notes.append(NO_TRACKER_NOTE)
    if is_vggt:
        logger.info("%s has no instance branch (a VGGT checkpoint): part_adaptor and part_head keep their initialisation",
                    source)
    model.load_report = report
    return report


def _is_vggt(state_dict: dict[str, Tensor]) -> bool:
    return not any(name.startswith(INSTANCE_BRANCH_PREFIXES) for name in state_dict)


def load_checkpoint_file(
    path: str | Path, config: IGGTConfig | None = None, *, strict: bool = True, source: str | None = None
) -> tuple[IGGT, LoadReport]:
    """A model from one checkpoint file: ours, the released IGGT, or VGGT-1B.

    The config comes from ``config``, else from a ``config.json`` next to the file, else it is
    the released shape (``iggt-1b``). A file without instance-branch weights is taken as VGGT:
    the geometry part loads and the instance branch keeps its fresh initialisation. ``source``
    names the file in the report and in errors (default: its path). A file without
    ``track_head.*`` gives a model without the point tracker, whatever the config says.
    """
    path = Path(path)
    if config is None:
        sibling = path.with_name(CONFIG_NAME)
        config = read_config(sibling) if sibling.is_file() else IGGTConfig.from_preset("iggt-1b")
    state_dict = read_state_dict(path)
    if config.track_head and not any(name.startswith(TRACKER_PREFIX) for name in state_dict):
        logger.info("%s has no point tracker (no %s* entries): the model is built without one", path, TRACKER_PREFIX)
        config = config.replace(track_head=False)
    model = _model_for(config, state_dict)
    report = _apply(model, state_dict, source or str(path), strict, _is_vggt(state_dict))
    return model.eval(), report


def load_official_weights(model: IGGT, kind: str, path: str | Path | None = None, *, strict: bool = True) -> LoadReport:
    """Initialise an existing model from the released weights: ``kind`` "iggt" or "vggt" (training's init).

    ``path`` is the downloaded checkpoint file; without it the file is fetched from the Hub
    (``lifuguan/IGGT_official`` or ``facebook/VGGT-1B``), which fails fast when offline. With
    "vggt" the instance branch is allowed to be missing and keeps its initialisation.
    """
    if kind not in ("iggt", "vggt"):
        raise ValueError(f"unknown official weights {kind!r}; expected 'iggt' or 'vggt'")
    if path is None:
        path = (hub_download(OFFICIAL_REPO_ID, checkpoint_file_in_repo(OFFICIAL_REPO_ID).filename) if kind == "iggt"
                else hub_download(VGGT_REPO_ID, VGGT_FILENAME))
    return _apply(model, read_state_dict(path), str(path), strict, is_vggt=kind == "vggt")


def _load_from_hub(spec: HubSpec, strict: bool) -> IGGT:
    """The file `checkpoint_file_in_repo` chooses, with the config beside it; the choice is in the report."""
    choice = checkpoint_file_in_repo(spec.repo_id, spec.filename)
    logger.info("%s: loading %s (%s)", spec.repo_id, choice.filename, choice.reason)
    model, report = load_checkpoint_file(hub_download(choice.repo_id, choice.filename), _hub_config(choice),
                                         strict=strict, source=str(choice))
    if spec.filename is None and not any(name.startswith(INSTANCE_BRANCH_PREFIXES) for name in report.loaded):
        raise CheckpointError(f"{choice} ({choice.reason}) has no instance branch: it is not an IGGT checkpoint "
                              f"(VGGT's?); name the file to load it anyway: {choice}")
    report.hub_file = choice
    return model


def _hub_config(choice: HubFile) -> IGGTConfig:
    """Our ``config.json`` beside the chosen file; else, or when that file is not an `IGGTConfig` (the
    release's hub mixin writes its constructor arguments there), the released shape ``iggt-1b``."""
    if choice.config_name is not None:
        try:
            return read_config(hub_download(choice.repo_id, choice.config_name))
        except CheckpointError as error:
            logger.warning("%s: %s is not this project's model config, so the weights are read as the released "
                           "iggt-1b shape (%s)", choice.repo_id, choice.config_name, error)
    return IGGTConfig.from_preset("iggt-1b")


def load_model(spec: str | Path, *, strict: bool = True) -> IGGT:
    """A ready model (eval mode, CPU) from a preset name, a folder, a checkpoint file or a Hub repo id.

    * preset (``tiny``, ``small``, ``iggt-1b``): random weights, for tests and training;
    * folder written by `save_model` (``config.json`` + ``model.safetensors``), or a folder with
      exactly one checkpoint file (such as a download of the released weights);
    * a checkpoint file: ours, the released IGGT ``.pt/.pth/.safetensors``, or VGGT-1B;
    * ``owner/name`` on the Hugging Face Hub, or ``owner/name:filename`` for one file of it; without a
      filename `iggt.checkpoints.checkpoint_file_in_repo` chooses (and offline, among the cached files;
      fails fast when nothing is cached, saying what to do).

    The `LoadReport` (when weights were loaded) is logged and kept as ``model.load_report``.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if text in PRESETS and not path.exists():
        logger.warning("model %r: preset with RANDOM weights (no checkpoint loaded)", text)
        return IGGT(IGGTConfig.from_preset(text)).eval()
    if path.is_dir():
        model, _ = load_checkpoint_file(checkpoint_file_in_folder(path), strict=strict)
    elif path.is_file():
        model, _ = load_checkpoint_file(path, strict=strict)
    elif (hub := parse_hub_spec(text)) is not None:
        model = _load_from_hub(hub, strict)
    else:
        raise CheckpointError(
            f"cannot find model {text!r}: not a preset ({', '.join(PRESETS)}), "
            "not an existing folder or file, and not a Hub id of the form owner/name or owner/name:file"
        )
    return model
