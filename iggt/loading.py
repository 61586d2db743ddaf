"""Models from checkpoints and back: the one route from "a name, folder, file or Hub id" to an `IGGT`.

`load_model(spec)` accepts a preset name (random weights), a folder written by `save_model`, a
checkpoint file (ours, the released IGGT, VGGT-1B) or a Hub repository id. `save_model` writes
the folder format (``config.json`` + ``model.safetensors``) that `load_model` reads back; upload
such a folder with ``huggingface_hub.upload_folder`` to share it on the Hub.

Official files load as the release's own demo loads them (``strict=False``): extra entries and
missing entries that nothing reads are reported and accepted; a missing entry that the forward
pass reads is refused, by name. The file I/O and the report are `iggt.checkpoints`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from .checkpoints import (
    CONFIG_NAME,
    HUB_ID,
    CHECKPOINT_SUFFIXES,
    INSTANCE_BRANCH_PREFIXES,
    OFFICIAL_REPO_ID,
    VGGT_FILENAME,
    VGGT_REPO_ID,
    WEIGHTS_NAME,
    CheckpointError,
    LoadReport,
    apply_state_dict,
    checkpoint_file_in_folder,
    checkpoint_file_in_repo,
    hub_download,
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


def _apply(model: IGGT, state_dict: dict[str, Tensor], source: str, strict: bool, is_vggt: bool) -> LoadReport:
    report = apply_state_dict(
        model, state_dict, source=source, strict=strict, unused=model.state_entries_unused_by_forward(),
        allowed_missing=INSTANCE_BRANCH_PREFIXES if is_vggt else (),
    )
    if is_vggt:
        logger.info("%s has no instance branch (a VGGT checkpoint): part_adaptor and part_head keep their initialisation",
                    source)
    model.load_report = report
    return report


def _is_vggt(state_dict: dict[str, Tensor]) -> bool:
    return not any(name.startswith(INSTANCE_BRANCH_PREFIXES) for name in state_dict)


def load_checkpoint_file(
    path: str | Path, config: IGGTConfig | None = None, *, strict: bool = True
) -> tuple[IGGT, LoadReport]:
    """A model from one checkpoint file: ours, the released IGGT, or VGGT-1B.

    The config comes from ``config``, else from a ``config.json`` next to the file, else it is
    the released shape (``iggt-1b``). A file without instance-branch weights is taken as VGGT:
    the geometry part loads and the instance branch keeps its fresh initialisation.
    """
    path = Path(path)
    if config is None:
        sibling = path.with_name(CONFIG_NAME)
        config = read_config(sibling) if sibling.is_file() else IGGTConfig.from_preset("iggt-1b")
    state_dict = read_state_dict(path)
    model = _model_for(config, state_dict)
    report = _apply(model, state_dict, str(path), strict, _is_vggt(state_dict))
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
        path = (hub_download(OFFICIAL_REPO_ID, checkpoint_file_in_repo(OFFICIAL_REPO_ID)) if kind == "iggt"
                else hub_download(VGGT_REPO_ID, VGGT_FILENAME))
    return _apply(model, read_state_dict(path), str(path), strict, is_vggt=kind == "vggt")


def _load_from_hub(repo_id: str, strict: bool) -> tuple[IGGT, LoadReport]:
    from huggingface_hub.utils import EntryNotFoundError, RepositoryNotFoundError

    try:
        config_path = hub_download(repo_id, CONFIG_NAME)
        return load_checkpoint_file(hub_download(repo_id, WEIGHTS_NAME), read_config(config_path), strict=strict)
    except RepositoryNotFoundError as error:
        raise CheckpointError(f"no model {repo_id!r} on the Hugging Face Hub (or it is private)") from error
    except EntryNotFoundError:
        pass  # not our format: the released checkpoint is one bare file
    return load_checkpoint_file(hub_download(repo_id, checkpoint_file_in_repo(repo_id)), strict=strict)


def load_model(spec: str | Path, *, strict: bool = True) -> IGGT:
    """A ready model (eval mode, CPU) from a preset name, a folder, a checkpoint file or a Hub repo id.

    * preset (``tiny``, ``small``, ``iggt-1b``): random weights, for tests and training;
    * folder written by `save_model` (``config.json`` + ``model.safetensors``), or a folder with
      exactly one checkpoint file (such as a download of the released weights);
    * a checkpoint file: ours, the released IGGT ``.pt/.pth/.safetensors``, or VGGT-1B;
    * ``owner/name`` on the Hugging Face Hub (fails fast when offline, saying what to do).

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
    elif HUB_ID.fullmatch(text) and path.suffix not in CHECKPOINT_SUFFIXES:
        model, _ = _load_from_hub(text, strict)
    else:
        raise CheckpointError(
            f"cannot find model {text!r}: not a preset ({', '.join(PRESETS)}), "
            "not an existing folder or file, and not a Hub id of the form owner/name"
        )
    return model
