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
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from .config import IGGTConfig
from .errors import IGGTError

logger = logging.getLogger(__name__)

OFFICIAL_REPO_ID = "lifuguan/IGGT_official"
VGGT_REPO_ID, VGGT_FILENAME = "facebook/VGGT-1B", "model.pt"
TRACKER_PREFIX = "track_head."
"""The released point tracker's entries: loaded into models that have one (``config.track_head``),
skipped by name for models without one (the presets trained here)."""
INSTANCE_BRANCH_PREFIXES = ("part_adaptor.", "part_head.")
"""Absent from VGGT checkpoints; stays freshly initialised when starting from VGGT-1B."""
WRAPPER_KEYS = ("model", "state_dict", "module")
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
HUB_SPEC = re.compile(r"(?P<repo_id>[A-Za-z0-9][\w.-]*/[\w.-]+)(?::(?P<filename>[^:]+))?")
"""owner/name of a Hugging Face Hub repository, optionally :filename (one file of it)."""
RELEASE_FILENAMES = ("model.safetensors", "pytorch_model.bin")
"""Checkpoint names preferred in a Hub repository with several: the files the release's
``IGGT.from_pretrained`` reads (its model class is a ``huggingface_hub.PyTorchModelHubMixin``).
Its README and ``demo.py`` name no file: the demo loads a local ``MODEL_PATH``."""
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LEGACY_HEAD_FIELD = "apply_discarded_cross_attention"
"""`IGGTConfig` field added on 2026-11-30; a saved config without it was trained with the old head."""
TRACKER_FIELD = "track_head"
"""`IGGTConfig` field added on 2026-12-02; a saved config without it comes from a model without a tracker."""


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
    """Checkpoint entries ignored on purpose (``track_head.*`` for a model without a tracker)."""
    notes: list[str] = field(default_factory=list)
    """What the model lacks by design, one line each (e.g. no point tracker); part of `summary`."""
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    """(name, shape in the checkpoint, shape in the model); such entries are not loaded."""
    hub_file: HubFile | None = None
    """The file of a Hub repository the weights came from, and why that one (`checkpoint_file_in_repo`)."""

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
        return "; ".join([text, *self.notes])


def apply_state_dict(
    model: nn.Module,
    state_dict: dict[str, Tensor],
    *,
    source: str,
    strict: bool = True,
    unused: set[str] = frozenset(),
    allowed_missing: tuple[str, ...] = (),
    skipped_prefixes: tuple[str, ...] = (),
) -> LoadReport:
    """Copy every entry that fits (same name, same shape) into ``model`` and report the rest.

    As the release's own loader, extra entries and missing entries that nothing reads are
    accepted with a warning; ``unused`` names the model's entries of that kind. In strict mode a
    missing entry that the forward pass reads, or a shape mismatch, raises a `CheckpointError`
    listing every problem. ``allowed_missing`` prefixes may be missing even though they are used
    (the instance branch when starting from VGGT keeps its fresh initialisation).
    Entries under ``skipped_prefixes`` are skipped by name (``track_head.*`` for a model without a tracker).
    """
    expected = model.state_dict()
    report = LoadReport(source=source)
    usable: dict[str, Tensor] = {}
    for name, tensor in state_dict.items():
        if skipped_prefixes and name.startswith(skipped_prefixes):
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
    with the extra attention, so it keeps that behaviour (never silently changed); one written
    before ``track_head`` existed comes from a model without the point tracker.
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
    values.setdefault(TRACKER_FIELD, False)
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
        f"With internet, `hf download {repo_id}` puts it into the Hugging Face cache, from which it then "
        f"loads offline too (the released weights are {OFFICIAL_REPO_ID}); or download one file with "
        f"`hf download {repo_id} <file> --local-dir <folder>` and pass that file."
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

    unavailable = _hub_unavailable() if hub_offline() or not local_files_only else None
    if unavailable:
        reason, local_files_only = f"{unavailable} and the file is not cached", True
    else:
        reason = "the file is not cached" if local_files_only else "download failed"
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=local_files_only,
                                    **{**_hub_location(), **options}))
    except LocalEntryNotFoundError as error:  # also raised for connection failures
        raise CheckpointError(_hub_help(repo_id, reason)) from error


def _hub_location() -> dict[str, str]:
    """The Hub endpoint and cache folder the client is configured with (``HF_ENDPOINT``, ``HF_HUB_CACHE``),
    passed explicitly so that listings, header reads and downloads use the same ones in every version."""
    from huggingface_hub import constants

    return {"endpoint": constants.ENDPOINT, "cache_dir": constants.HF_HUB_CACHE}


def _network_errors() -> tuple[type[Exception], ...]:
    """What the Hub client raises when the network fails: OSError (requests-based versions) or its HTTP library's errors."""
    try:
        from huggingface_hub.errors import HTTPError  # the HTTP library's base error, where it is not an OSError
    except ImportError:
        return (OSError,)
    return (OSError, HTTPError)


@dataclass(frozen=True)
class HubSpec:
    """A Hub model as a user names it: ``owner/name``, or ``owner/name:filename`` for one file of it."""

    repo_id: str
    filename: str | None = None

    def __str__(self) -> str:
        return f"{self.repo_id}:{self.filename}" if self.filename else self.repo_id


def parse_hub_spec(text: str) -> HubSpec | None:
    """``owner/name`` or ``owner/name:filename`` as a `HubSpec`; None for anything else.

    ``runs/model.pt`` (a name with a checkpoint suffix) is a missing local file, not a repository;
    the file after ``:`` (a path inside the repository) must be a checkpoint file.
    """
    match = HUB_SPEC.fullmatch(text)
    if match is None or match["repo_id"].endswith(CHECKPOINT_SUFFIXES):
        return None
    filename = match["filename"]
    if filename is not None and not filename.endswith(CHECKPOINT_SUFFIXES):
        raise CheckpointError(f"model {text!r}: the file after ':' must be a checkpoint file "
                              f"({', '.join(CHECKPOINT_SUFFIXES)})")
    return HubSpec(match["repo_id"], filename)


@dataclass(frozen=True)
class HubFile:
    """The checkpoint file chosen in a Hub repository and why; the app's banner names both."""

    repo_id: str
    filename: str
    reason: str
    config_name: str | None = None
    """A ``config.json`` beside the file in the repository (ours, or the hub mixin's), if there is one."""

    def __str__(self) -> str:
        return f"{self.repo_id}:{self.filename}"


@dataclass(frozen=True)
class _RepoListing:
    """The files of a Hub repository with their sizes, from the Hub or (offline) from the local cache."""

    repo_id: str
    sizes: dict[str, int]
    cached_folder: Path | None = None
    """The cached snapshot the listing comes from, when offline."""

    def choice(self, filename: str, reason: str) -> HubFile:
        config = str(PurePosixPath(filename).with_name(CONFIG_NAME))
        return HubFile(self.repo_id, filename, reason, config if config in self.sizes else None)

    def entry_names(self, filename: str) -> list[str]:
        """Entry names of a safetensors file from its header alone (kilobytes, not the weights)."""
        if self.cached_folder is not None:
            from safetensors import safe_open

            with safe_open(str(self.cached_folder / filename), "pt") as file:
                return list(file.keys())
        from huggingface_hub import HfApi

        return list(HfApi(endpoint=_hub_location()["endpoint"]).parse_safetensors_file_metadata(
            self.repo_id, filename).tensors)


def _hub_unavailable() -> str | None:
    """Why the Hub cannot be asked now (offline mode, no answer within seconds), or None."""
    if hub_offline():
        return "offline mode (HF_HUB_OFFLINE)"
    if not _hub_reachable():
        return "the Hub is unreachable"
    return None


def _cached_listing(repo_id: str, reason: str) -> _RepoListing:
    """The files of the repository's cached ``main`` snapshot (all of them after a Space's ``preload_from_hub``)."""
    from huggingface_hub import scan_cache_dir

    cache = Path(_hub_location()["cache_dir"])
    repos = scan_cache_dir(cache).repos if cache.is_dir() else ()
    snapshot = next((revision for repo in repos if repo.repo_id == repo_id and repo.repo_type == "model"
                     for revision in repo.revisions if "main" in revision.refs), None)
    if snapshot is None:
        raise CheckpointError(_hub_help(repo_id, f"{reason} and the repository is not cached"))
    folder = Path(snapshot.snapshot_path)
    sizes = {Path(f.file_path).relative_to(folder).as_posix(): f.size_on_disk for f in snapshot.files}
    return _RepoListing(repo_id, sizes, folder)


def _listing(repo_id: str) -> _RepoListing:
    """The repository's files from the Hub; from the cached snapshot when the Hub is off, unreachable or failing."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import RepositoryNotFoundError

    unavailable = _hub_unavailable()
    if unavailable:
        return _cached_listing(repo_id, unavailable)
    try:
        entries = list(HfApi(endpoint=_hub_location()["endpoint"]).list_repo_tree(repo_id, recursive=True))
    except RepositoryNotFoundError as error:
        raise CheckpointError(f"no model {repo_id!r} on the Hugging Face Hub (or it is private)") from error
    except _network_errors() as error:  # the Hub failed: a cached snapshot (a Space's preload) still serves
        logger.warning("cannot list %s on the Hub (%s); looking in the local cache", repo_id, error)
        return _cached_listing(repo_id, f"the Hub failed ({type(error).__name__})")
    return _RepoListing(repo_id, {entry.path: entry.size for entry in entries if isinstance(entry, RepoFile)})


def _has_iggt_entries(names: list[str]) -> bool:
    """Whether state-dict entry names are IGGT's: a VGGT aggregator and the instance branch."""
    names = [name.removeprefix("module.") for name in names]
    return (any(name.startswith("aggregator.") for name in names)
            and any(name.startswith(INSTANCE_BRANCH_PREFIXES) for name in names))


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size:,} bytes"


def _largest_iggt_file(listing: _RepoListing, candidates: list[str]) -> HubFile:
    """The largest candidate whose entries are IGGT's; a safetensors file is checked from its header
    before anything is downloaded, another format only when it loads (largest first)."""
    from huggingface_hub.utils import SafetensorsParsingError

    rejected = []
    for name in sorted(candidates, key=lambda name: (-listing.sizes[name], name)):
        size = _megabytes(listing.sizes[name])
        if not name.endswith(".safetensors"):
            return listing.choice(name, f"the largest of {len(candidates)} checkpoint files ({size}; "
                                        f"its entries are checked as it loads)" + _passed_over(rejected))
        try:
            iggt = _has_iggt_entries(listing.entry_names(name))
        except (SafetensorsParsingError, OSError) as error:  # a header that does not parse is no IGGT file
            logger.info("%s: cannot read the header of %s: %s", listing.repo_id, name, error)
            iggt = False
        if iggt:
            return listing.choice(name, f"the largest of {len(candidates)} checkpoint files with IGGT's entries "
                                        f"({size}; checked in its header)" + _passed_over(rejected))
        rejected.append(name)
    raise CheckpointError(f"Hub repository {listing.repo_id!r} has no IGGT checkpoint: none of "
                          f"{', '.join(rejected)} holds the aggregator and the instance head; pass one as "
                          f"{listing.repo_id}:<file> to load it anyway")


def _passed_over(rejected: list[str]) -> str:
    return f"; passed over, not IGGT: {', '.join(rejected)}" if rejected else ""


def checkpoint_file_in_repo(repo_id: str, filename: str | None = None) -> HubFile:
    """The checkpoint file to download from a Hub repository, and why.

    1. ``filename``, when given (``owner/name:filename``);
    2. the repository's only checkpoint file;
    3. among several, the first of `RELEASE_FILENAMES`;
    4. else the largest one whose entries are IGGT's, checked from a safetensors file's header
       before the download (files of another format are checked as they load).
    Offline (``HF_HUB_OFFLINE``, or the Hub not answering) the choice is made among the files of
    the cached snapshot, so a Space's preloaded weights load without the Hub.
    """
    listing = _listing(repo_id)
    candidates = sorted(name for name in listing.sizes if name.endswith(CHECKPOINT_SUFFIXES))
    if filename is not None:
        if filename not in listing.sizes:
            raise CheckpointError(f"Hub repository {repo_id!r} has no file {filename!r}"
                                  + (" cached" if listing.cached_folder else "")
                                  + f"; its checkpoint files: {', '.join(candidates) or 'none'}")
        return listing.choice(filename, "named after the repository id")
    if not candidates:
        shown = ", ".join(sorted(listing.sizes)[:10]) or "no files"
        raise CheckpointError(f"Hub repository {repo_id!r} has no checkpoint file "
                              f"({', '.join(CHECKPOINT_SUFFIXES)}){' cached' if listing.cached_folder else ''}; "
                              f"it holds {shown}")
    if len(candidates) == 1:
        return listing.choice(candidates[0], "the repository's only checkpoint file")
    release_name = next((name for name in RELEASE_FILENAMES if name in candidates), None)
    if release_name is not None:
        return listing.choice(release_name, f"of {len(candidates)} checkpoint files, the one the release's "
                                            f"IGGT.from_pretrained reads")
    return _largest_iggt_file(listing, candidates)
