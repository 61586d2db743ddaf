"""Loading weights: our own checkpoints, the released IGGT checkpoint and VGGT-1B.

Every load goes through `apply_state_dict`, which compares the file against the model entry by
entry and returns a `LoadReport` (loaded, missing, unexpected, skipped, shape mismatches). In
strict mode any problem raises a `CheckpointError` that lists it; nothing is dropped silently.
Files are read only with safetensors or ``torch.load(weights_only=True)``: a pickle that would
run arbitrary code is refused.

`load_model(spec)` is the one entry point for "give me a model": a preset name (random
weights), a folder saved by ``save_pretrained``, a checkpoint file, or a Hub repository id.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import socket
import zipfile
from urllib.parse import urlparse
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import PRESETS, IGGTConfig
from .iggt import IGGT
from ..errors import IGGTError

logger = logging.getLogger(__name__)

OFFICIAL_REPO_ID = "lifuguan/IGGT_official"
VGGT_REPO_ID, VGGT_FILENAME = "facebook/VGGT-1B", "model.pt"
SKIPPED_PREFIXES = ("track_head.",)
"""Released weights we deliberately do not build (the point tracker, unused by IGGT's pipeline)."""
INSTANCE_BRANCH_PREFIXES = ("part_adaptor.", "part_head.")
"""Absent from VGGT checkpoints; stays freshly initialised when starting from VGGT-1B."""
WRAPPER_KEYS = ("model", "state_dict", "module")
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""owner/name of a Hugging Face Hub repository."""
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(IGGTError):
    """A checkpoint could not be read or does not fit the model; the message says why and where."""


@dataclass
class LoadReport:
    """What happened to every entry of a checkpoint when it was applied to a model."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Model entries the checkpoint does not provide (they keep their initial values)."""
    unexpected: list[str] = field(default_factory=list)
    """Checkpoint entries the model has no place for."""
    skipped: list[str] = field(default_factory=list)
    """Checkpoint entries ignored on purpose (``track_head.*``)."""
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    """(name, shape in the checkpoint, shape in the model); such entries are not loaded."""

    def problems(self, allowed_missing: tuple[str, ...] = ()) -> list[str]:
        """One line per problem; missing entries under ``allowed_missing`` prefixes are not problems."""
        lines = [f"missing: {name}" for name in self.missing if not name.startswith(allowed_missing)]
        lines += [f"unexpected: {name}" for name in self.unexpected]
        lines += [f"shape mismatch: {name} is {list(got)} in the file, {list(want)} in the model"
                  for name, got, want in self.shape_mismatches]
        return lines

    def summary(self) -> str:
        text = (
            f"{self.source}: {len(self.loaded)} loaded, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.shape_mismatches)} shape mismatches, "
            f"{len(self.skipped)} skipped"
        )
        if self.skipped:
            prefixes = sorted({name.split(".")[0] for name in self.skipped})
            text += f" ({', '.join(prefixes)}: not part of this model)"
        return text


# --------------------------------------------------------------------------- reading files


def _unwrap(state: object, path: Path) -> dict[str, Tensor]:
    """The tensor dict inside a checkpoint (possibly under "model"/"state_dict"), without ``module.``."""
    while isinstance(state, dict) and not any(isinstance(v, Tensor) for v in state.values()):
        wrapper = next((key for key in WRAPPER_KEYS if isinstance(state.get(key), dict)), None)
        if wrapper is None:
            break
        state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} does not contain a state dict (a mapping of names to tensors)")
    tensors = {key: value for key, value in state.items() if isinstance(value, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} does not contain any tensors; top-level keys: {', '.join(map(str, list(state)[:10]))}")
    ignored = sorted(str(key) for key in state if key not in tensors)
    if ignored:
        logger.info("%s: ignoring %d non-tensor entries (%s)", path, len(ignored), ", ".join(ignored[:5]))
    return {key.removeprefix("module."): value for key, value in tensors.items()}


def _torch_load(path: Path) -> object:
    """``torch.load`` of plain tensors, memory-mapped where the format allows (halves peak memory)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` or ``.pt/.pth/.bin/.ckpt`` checkpoint, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _unwrap(load_file(str(path), device="cpu"), path)
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"cannot read {path}: the safetensors file is corrupt or truncated ({error})") from error
    try:
        state = _torch_load(path)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refusing to load {path}: it is a pickle that needs arbitrary code to load "
            f"(only plain tensors are accepted). Convert it to safetensors on a trusted machine. Details: {error}"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {path}: the file is corrupt, truncated or not a PyTorch checkpoint ({error})") from error
    return _unwrap(state, path)


# --------------------------------------------------------------------------- applying to a model


def apply_state_dict(
    model: nn.Module,
    state_dict: dict[str, Tensor],
    *,
    source: str,
    strict: bool = True,
    allowed_missing: tuple[str, ...] = (),
) -> LoadReport:
    """Copy every entry that fits (same name, same shape) into ``model`` and report the rest.

    ``allowed_missing`` prefixes are reported as missing but do not fail strict mode (e.g. the
    instance branch when starting from VGGT). ``track_head.*`` entries are skipped by name.
    """
    expected = model.state_dict()
    report = LoadReport(source=source)
    usable: dict[str, Tensor] = {}
    for name, tensor in state_dict.items():
        if name.startswith(SKIPPED_PREFIXES):
            report.skipped.append(name)
        elif name not in expected:
            report.unexpected.append(name)
        elif tuple(tensor.shape) != tuple(expected[name].shape):
            report.shape_mismatches.append((name, tuple(tensor.shape), tuple(expected[name].shape)))
        else:
            usable[name] = tensor
    mismatched = {name for name, _, _ in report.shape_mismatches}
    report.loaded = sorted(usable)
    report.missing = sorted(name for name in expected if name not in usable and name not in mismatched)
    report.unexpected.sort()

    problems = report.problems(allowed_missing)
    if strict and problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise CheckpointError(f"{source} does not fit the model ({len(problems)} problems):\n  {shown}")
    model.load_state_dict(usable, strict=False)
    if problems:  # not strict: say so loudly, with every problem
        logger.warning("%s\n  %s", report.summary(), "\n  ".join(problems))
    else:
        logger.info(report.summary())
    return report


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
        config = IGGTConfig.from_json(sibling) if sibling.is_file() else IGGTConfig.from_preset("iggt-1b")
    state_dict = read_state_dict(path)
    is_vggt = not any(name.startswith(INSTANCE_BRANCH_PREFIXES) for name in state_dict)
    model = _model_for(config, state_dict)
    report = apply_state_dict(
        model, state_dict, source=str(path), strict=strict,
        allowed_missing=INSTANCE_BRANCH_PREFIXES if is_vggt else (),
    )
    if is_vggt:
        logger.info("%s has no instance branch (a VGGT checkpoint): part_adaptor and part_head keep their initialisation", path)
    return model.eval(), report


# --------------------------------------------------------------------------- the Hub


def _hub_help(repo_id: str, reason: str) -> str:
    return (
        f"cannot get model {repo_id!r} from the Hugging Face Hub ({reason}). "
        f"On a machine with internet run `hf download {repo_id} --local-dir <folder>` "
        f"(the released weights are {OFFICIAL_REPO_ID}), copy the folder here and pass the folder "
        f"or its checkpoint file instead."
    )


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint opens quickly (assumed yes behind a proxy)."""
    from huggingface_hub import constants

    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def hub_download(repo_id: str, filename: str, *, local_files_only: bool = False, **options) -> Path:
    """One file of a Hub repository; offline (or unreachable) fails fast with instructions.

    When offline (``HF_HUB_OFFLINE``) or when the Hub does not answer within seconds, only
    the local cache is used, instead of waiting through the client's retries.
    ``options`` go to ``huggingface_hub.hf_hub_download`` (revision, cache_dir, token, ...).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if _hub_offline():
        reason = "offline mode (HF_HUB_OFFLINE) and the file is not cached"
        local_files_only = True
    elif not local_files_only and not _hub_reachable():
        reason = "the Hub is unreachable and the file is not cached"
        local_files_only = True
    else:
        reason = "the file is not cached" if local_files_only else "download failed"
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=local_files_only, **options))
    except LocalEntryNotFoundError as error:  # also raised for connection failures
        raise CheckpointError(_hub_help(repo_id, reason)) from error


def _checkpoint_file_in_repo(repo_id: str) -> str:
    """The single checkpoint file of a Hub repository that is not in our own format."""
    from huggingface_hub import list_repo_files

    try:
        files = list_repo_files(repo_id)
    except OSError as error:
        raise CheckpointError(_hub_help(repo_id, f"network error: {error}")) from error
    candidates = sorted(name for name in files if name.endswith(CHECKPOINT_SUFFIXES))
    if len(candidates) != 1:
        raise CheckpointError(
            f"Hub repository {repo_id!r} has {len(candidates)} checkpoint files ({', '.join(candidates) or 'none'}); "
            "download the one you want and pass the file"
        )
    return candidates[0]


def _load_from_hub(repo_id: str, strict: bool) -> tuple[IGGT, LoadReport]:
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        config_path = hub_download(repo_id, CONFIG_NAME)
        return load_checkpoint_file(hub_download(repo_id, WEIGHTS_NAME), IGGTConfig.from_json(config_path), strict=strict)
    except RepositoryNotFoundError as error:
        raise CheckpointError(f"no model {repo_id!r} on the Hugging Face Hub (or it is private)") from error
    except EntryNotFoundError:
        pass  # not our format: the released checkpoint is one bare file
    return load_checkpoint_file(hub_download(repo_id, _checkpoint_file_in_repo(repo_id)), strict=strict)


def load_official_weights(model: IGGT, kind: str, path: str | Path | None = None, *, strict: bool = True) -> LoadReport:
    """Initialise an existing model from the released weights: ``kind`` "iggt" or "vggt" (training's init).

    ``path`` is the downloaded checkpoint file; without it the file is fetched from the Hub
    (``lifuguan/IGGT_official`` or ``facebook/VGGT-1B``), which fails fast when offline. With
    "vggt" the instance branch is allowed to be missing and keeps its initialisation.
    """
    if kind not in ("iggt", "vggt"):
        raise ValueError(f"unknown official weights {kind!r}; expected 'iggt' or 'vggt'")
    if path is None:
        path = (hub_download(OFFICIAL_REPO_ID, _checkpoint_file_in_repo(OFFICIAL_REPO_ID)) if kind == "iggt"
                else hub_download(VGGT_REPO_ID, VGGT_FILENAME))
    report = apply_state_dict(
        model, read_state_dict(path), source=str(path), strict=strict,
        allowed_missing=INSTANCE_BRANCH_PREFIXES if kind == "vggt" else (),
    )
    model.load_report = report
    return report


# --------------------------------------------------------------------------- one entry point


def _checkpoint_file_in_folder(folder: Path) -> Path:
    """``model.safetensors`` of a saved model, else the folder's only checkpoint file (e.g. a download)."""
    if (folder / WEIGHTS_NAME).is_file():
        return folder / WEIGHTS_NAME
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if len(found) != 1:
        raise CheckpointError(
            f"{folder} holds {len(found)} checkpoint files ({', '.join(p.name for p in found) or 'none'}); "
            f"expected a saved IGGT model ({CONFIG_NAME} + {WEIGHTS_NAME}) or exactly one checkpoint: pass the file"
        )
    return found[0]


def load_model(spec: str | Path, *, strict: bool = True) -> IGGT:
    """A ready model (eval mode, CPU) from a preset name, a folder, a checkpoint file or a Hub repo id.

    * preset (``tiny``, ``small``, ``iggt-1b``): random weights, for tests and training;
    * folder written by ``IGGT.save_pretrained`` (``config.json`` + ``model.safetensors``), or
      a folder with exactly one checkpoint file (such as a download of the released weights);
    * a checkpoint file: ours, the released IGGT ``.pt/.pth/.safetensors``, or VGGT-1B;
    * ``owner/name`` on the Hugging Face Hub (fails fast when offline, saying what to do).

    The `LoadReport` (when weights were loaded) is logged and kept as ``model.load_report``.
    """
    text = str(spec)
    path = Path(text).expanduser()
    report: LoadReport | None = None
    if text in PRESETS and not path.exists():
        logger.warning("model %r: preset with RANDOM weights (no checkpoint loaded)", text)
        model = IGGT(IGGTConfig.from_preset(text)).eval()
    elif path.is_dir():
        model, report = load_checkpoint_file(_checkpoint_file_in_folder(path), strict=strict)
    elif path.is_file():
        model, report = load_checkpoint_file(path, strict=strict)
    elif HUB_ID.fullmatch(text) and path.suffix not in CHECKPOINT_SUFFIXES:
        model, report = _load_from_hub(text, strict)
    else:
        raise CheckpointError(
            f"cannot find model {text!r}: not a preset ({', '.join(PRESETS)}), "
            "not an existing folder or file, and not a Hub id of the form owner/name"
        )
    model.load_report = report
    return model
