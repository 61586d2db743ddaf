"""Checkpoint files and the Hub: reading and writing weights, comparing them with a model, reporting.

Nothing here knows the IGGT class: this is file and network I/O plus the entry-by-entry
comparison of a state dict with any `nn.Module` (`apply_state_dict`, which returns a
`LoadReport`). Building a model from a checkpoint is `iggt.loading`.

Files are read only with safetensors or ``torch.load(weights_only=True)``: a pickle that would
run arbitrary code is refused.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import socket
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from .config import IGGTConfig
from .errors import IGGTError

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
LEGACY_HEAD_FIELD = "apply_discarded_cross_attention"
"""`IGGTConfig` field added on 2026-11-30; a saved config without it was trained with the old head."""


class CheckpointError(IGGTError):
    """A checkpoint could not be read or does not fit the model; the message says why and where.

    ``problems`` lists the entries that do not fit (one line each) when that is the reason.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


# --------------------------------------------------------------------------- load reports


@dataclass
class LoadReport:
    """What happened to every entry of a checkpoint when it was applied to a model."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Model entries the checkpoint does not provide (they keep their initial values)."""
    missing_but_used: list[str] = field(default_factory=list)
    """The part of ``missing`` that the forward pass reads: a model with these would compute
    with initial values (refused in strict mode). The rest are never read or computed by the
    model itself (constant index tables, the release's unused weights)."""
    unexpected: list[str] = field(default_factory=list)
    """Checkpoint entries the model has no place for (ignored, with a warning)."""
    skipped: list[str] = field(default_factory=list)
    """Checkpoint entries ignored on purpose (``track_head.*``)."""
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    """(name, shape in the checkpoint, shape in the model); such entries are not loaded."""

    def problems(self) -> list[str]:
        """What makes the weights unusable: entries the forward pass reads but the file lacks, or of another shape."""
        lines = [f"missing: {name} (used by the forward pass)" for name in self.missing_but_used]
        lines += [f"shape mismatch: {name} is {list(got)} in the file, {list(want)} in the model"
                  for name, got, want in self.shape_mismatches]
        return lines

    def warnings(self) -> list[str]:
        """Differences that do not change what the model computes: unused entries missing, extra entries."""
        used = set(self.missing_but_used)
        lines = [f"missing: {name} (not read by the forward pass)" for name in self.missing if name not in used]
        lines += [f"unexpected: {name} (ignored)" for name in self.unexpected]
        return lines

    def summary(self) -> str:
        text = (
            f"{self.source}: {len(self.loaded)} loaded, {len(self.missing)} missing "
            f"({len(self.missing_but_used)} used by the forward pass), {len(self.unexpected)} unexpected, "
            f"{len(self.shape_mismatches)} shape mismatches, {len(self.skipped)} skipped"
        )
        if self.skipped:
            prefixes = sorted({name.split(".")[0] for name in self.skipped})
            text += f" ({', '.join(prefixes)}: not part of this model)"
        return text


def apply_state_dict(
    model: nn.Module,
    state_dict: dict[str, Tensor],
    *,
    source: str,
    strict: bool = True,
    unused: set[str] = frozenset(),
    allowed_missing: tuple[str, ...] = (),
) -> LoadReport:
    """Copy every entry that fits (same name, same shape) into ``model`` and report the rest.

    As the release's own loader, extra entries and missing entries that nothing reads are
    accepted with a warning; ``unused`` names the model's entries of that kind. In strict mode a
    missing entry that the forward pass reads, or a shape mismatch, raises a `CheckpointError`
    listing every problem. ``allowed_missing`` prefixes may be missing even though they are used
    (the instance branch when starting from VGGT keeps its fresh initialisation).
    ``track_head.*`` entries are skipped by name.
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
    report.missing_but_used = [name for name in report.missing
                               if name not in unused and not name.startswith(allowed_missing)]
    report.unexpected.sort()

    problems = report.problems()
    if strict and problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise CheckpointError(f"{source} does not fit the model ({len(problems)} problems):\n  {shown}", problems)
    model.load_state_dict(usable, strict=False)
    differences = problems + report.warnings()
    if differences:  # never silent: every difference is in the log
        logger.warning("%s\n  %s", report.summary(), "\n  ".join(differences))
    else:
        logger.info(report.summary())
    return report


# --------------------------------------------------------------------------- reading and writing files


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


def read_config(path: str | Path) -> IGGTConfig:
    """The `IGGTConfig` of a saved model's ``config.json``.

    A file written before ``apply_discarded_cross_attention`` existed comes from a model trained
    with the extra attention, so it keeps that behaviour (never silently changed).
    """
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read model config {path}: {error}") from error
    if not isinstance(values, dict):
        raise CheckpointError(f"model config {path} must hold a JSON object")
    if LEGACY_HEAD_FIELD not in values:
        logger.info("%s predates %s: the model keeps the instance head it was trained with", path, LEGACY_HEAD_FIELD)
        values[LEGACY_HEAD_FIELD] = True
    try:
        return IGGTConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"model config {path} is not a valid IGGTConfig: {error}") from error


def write_checkpoint(folder: str | Path, config: IGGTConfig, state_dict: dict[str, Tensor]) -> Path:
    """``config.json`` + ``model.safetensors`` in ``folder`` (created); returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(config.to_json() + "\n")
    save_file({name: tensor.detach().contiguous().cpu() for name, tensor in state_dict.items()},
              str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    return folder


def checkpoint_file_in_folder(folder: Path) -> Path:
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


# --------------------------------------------------------------------------- the Hub


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` read as the Hub client reads it (1/ON/YES/TRUE, any case), at call time."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in constants.ENV_VARS_TRUE_VALUES


def _hub_help(repo_id: str, reason: str) -> str:
    return (
        f"cannot get model {repo_id!r} from the Hugging Face Hub ({reason}). "
        f"On a machine with internet run `hf download {repo_id} --local-dir <folder>` "
        f"(the released weights are {OFFICIAL_REPO_ID}), copy the folder here and pass the folder "
        f"or its checkpoint file instead."
    )


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
    from huggingface_hub.utils import LocalEntryNotFoundError

    if hub_offline():
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


def checkpoint_file_in_repo(repo_id: str) -> str:
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
