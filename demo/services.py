"""Which model the app runs and which VLM answers questions; both shared by every session.

Model, in order of choice:
1. the checkpoint given with ``--checkpoint`` or ``IGGT_CHECKPOINT`` (a folder, a file, a preset
   name or a Hub repo id), when set;
2. the official 1B weights from the Hugging Face Hub, on a Space or a CUDA machine that is online;
3. the small model shipped in ``iggt/weights/iggt-small``, trained on synthetic scenes.
If the 1B weights cannot be fetched the app falls back to the small model and says so.
"""
from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from demo.loading_page import loading_note
from grounding.embedders import DEFAULT_MODEL as DEFAULT_EMBEDDER, Embedder, EmbedderUnavailable, shared_embedder
from grounding.vlm import VLM, make_backend
from grounding.vlm.openai_backend import API_KEY_ENV, VLMUnavailable, served_models
from iggt.checkpoints import OFFICIAL_REPO_ID as OFFICIAL_REPO, CheckpointError, hub_offline
from iggt.errors import IGGTError
from iggt.instances import RELEASE_PRESET, SHIPPED_MODEL_PRESET
from iggt.model.iggt import IGGT
from iggt.progress import Progress
from iggt.reconstruct import DEFAULT_CHECKPOINT as SHIPPED_MODEL, Reconstructor, describe_model, parameter_millions
from iggt.scene import Scene

log = logging.getLogger(__name__)

SIZE_FACTORS = (1.5, 2.0, 3.0)
"""Input sizes offered besides the model's own, as multiples of its training size."""
MAX_INPUT_SIZE = 518
EMBEDDER_VARIABLE = "IGGT_EMBEDDER"
"""The app's image-text embedding model (Find tab, the agent's pre-filter); default `DEFAULT_EMBEDDER`."""

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ModelInfo:
    """What the page tells the user about the loaded model."""

    title: str
    note: str
    clustering: str = RELEASE_PRESET
    """Default clustering preset: the one the released demo runs; the shipped model names its
    own (`describe`), the best on the benchmark (docs/clustering.md)."""

    def banner(self) -> str:
        return f"**Model:** {self.title}. {self.note}"


def _wants_official_weights() -> bool:
    online = not hub_offline()
    on_space = bool(os.environ.get("SPACE_ID"))
    return online and (on_space or torch.cuda.is_available())


def _is_shipped(spec: str) -> bool:
    return Path(spec).expanduser().resolve() == SHIPPED_MODEL.resolve()


def describe(spec: str, model: IGGT) -> ModelInfo:
    """Title and note for the banner: what the model is and what to expect from it."""
    if _is_shipped(spec):
        return ModelInfo(
            f"IGGT-small ({parameter_millions(model):.1f} M parameters), trained on synthetic scenes only",
            "It works on scenes like the bundled synthetic examples; on real photos its depth and "
            "instances are rough. Start the app with IGGT_CHECKPOINT, or on a GPU machine with internet "
            "access, for the paper's 1B model.", clustering=SHIPPED_MODEL_PRESET)
    if spec == OFFICIAL_REPO:
        return ModelInfo("IGGT-1B, official weights",
                         f"The paper's model, fetched from the Hugging Face Hub{_hub_file_note(model)}.")
    if getattr(model, "load_report", None) is None:
        return ModelInfo(f"{describe_model(model)} with RANDOM weights",
                         "No checkpoint was loaded: results are meaningless (for testing the app only).")
    note = f"Checkpoint chosen with --checkpoint / IGGT_CHECKPOINT{_hub_file_note(model)}."
    differences = model.load_report.warnings()
    if differences:  # loaded as the release loads it, but the user should know what differed
        note += f" Loaded with {len(differences)} harmless differences from the model: " + _first(differences)
    return ModelInfo(f"{describe_model(model)} from {Path(spec).name or spec}", note)


def _hub_file_note(model: IGGT) -> str:
    """Which file of a Hub repository was loaded and why (`iggt.checkpoints.checkpoint_file_in_repo`); empty otherwise."""
    hub_file = getattr(model.load_report, "hub_file", None)
    return f" (file {hub_file.filename}: {hub_file.reason})" if hub_file else ""


def _first(lines: list[str], count: int = 3) -> str:
    return "; ".join(lines[:count]) + (f"; and {len(lines) - count} more (see the server log)." if len(lines) > count
                                        else ".")


def _why_not_loaded(error: Exception) -> str:
    """A short reason for the banner, without file system paths."""
    if isinstance(error, CheckpointError) and error.problems:
        return f"{len(error.problems)} entries do not fit: " + _first(error.problems)
    if isinstance(error, CheckpointError) and "Hugging Face Hub" in str(error):
        return "the Hugging Face Hub could not be reached and the weights are not cached."
    return f"{type(error).__name__} (details in the server log)."


class ModelService:
    """Loads the model once (thread-safe) and runs it for every session.

    ``size`` is the long side of the model input in pixels (default: the model's training size);
    smaller is faster and coarser.
    """

    def __init__(self, spec: str | None = None, size: int | None = None):
        self._requested = spec or os.environ.get("IGGT_CHECKPOINT")
        self._size = size
        self._lock = threading.Lock()
        self._reconstructor: Reconstructor | None = None
        self._run = self._run_model
        self._wrapped = False
        self.info = ModelInfo("not loaded yet", "")

    def wrap_model_call(self, decorator: Callable) -> None:
        """Run the model through `decorator` (e.g. `spaces.GPU` on ZeroGPU Spaces)."""
        self._run = decorator(self._run_model)
        self._wrapped = True

    def reconstruct(self, views, progress: Progress | None = None, size: int | None = None) -> Scene:
        """Views -> Scene (no instances yet), at input ``size`` (default: the service's). A wrapped call
        gets no progress callback: it may run in another process, where the page's callback cannot follow."""
        return self._run(views, None if self._wrapped else progress, size)

    def _run_model(self, views, progress=None, size: int | None = None) -> Scene:
        reconstructor = self.load()
        if size is not None and size != reconstructor.size:
            reconstructor = copy.copy(reconstructor)  # the same model, another input size, for this call only
            reconstructor.size = size
        return reconstructor(views, progress=progress)

    def size_choices(self) -> dict[str, int]:
        """Input sizes the page offers, labelled with what they cost: the model's own size (and the one
        chosen with ``--size``) and larger multiples of 14 up to `MAX_INPUT_SIZE`. The position table
        is interpolated, so every multiple of the patch size works; beyond training size quality may vary."""
        reconstructor = self.load()
        trained = reconstructor.model.config.img_size
        step = reconstructor.patch_size
        sizes = sorted({reconstructor.size, trained,
                        *(round(trained * f / step) * step for f in SIZE_FACTORS if trained * f <= MAX_INPUT_SIZE)})
        labels = {}
        for size in sizes:
            cost = (size / reconstructor.size) ** 2
            note = "default" if size == reconstructor.size else f"{cost:.1f}x the patches: {cost:.1f}x the time or more"
            trained_note = ", trained size" if size == trained else ""
            labels[f"{size} px ({note}{trained_note})"] = size
        return labels

    def checked_size(self, choice) -> int | None:
        """The input size a widget value asks for (one of `size_choices`' sizes); None = the default."""
        if choice in (None, ""):
            return None
        offered = list(self.size_choices().values())
        if str(choice) not in map(str, offered):
            raise IGGTError(f"Input size {choice} is not offered: choose one of {', '.join(map(str, offered))}.")
        return int(choice)

    def _candidates(self) -> list[str]:
        if self._requested:
            return [self._requested]
        official = [OFFICIAL_REPO] if _wants_official_weights() else []
        return [*official, str(SHIPPED_MODEL)]

    def loading_note(self) -> str:
        """What `load` is about to load, in words, for the page shown meanwhile (`demo.loading_page`)."""
        return loading_note(self._candidates())

    def load(self) -> Reconstructor:
        """The shared `Reconstructor`, loading the model on first use; RuntimeError when none loads."""
        with self._lock:
            if self._reconstructor is None:
                self._reconstructor = self._load()
            return self._reconstructor

    def _load(self) -> Reconstructor:
        from iggt.loading import load_model

        errors = []
        for spec in self._candidates():
            if _is_shipped(spec) and not SHIPPED_MODEL.exists():
                errors.append("the shipped small model iggt/weights/iggt-small is missing (choose a model with "
                              "--checkpoint or IGGT_CHECKPOINT: a folder, a checkpoint file, a preset or a Hub id)")
                continue
            try:
                model = load_model(spec)
            except Exception as err:  # try the next candidate; the log says which one failed and why
                log.warning("could not load model %s: %s", spec, err)
                errors.append(_why_not_loaded(err))
                continue
            info = describe(spec, model)
            if errors:
                info = replace(info, note=info.note + f" (The 1B weights were not used: {errors[0]})")
            self.info = info
            log.info("model loaded: %s", info.title)
            return Reconstructor(model, size=self._size, model_name=info.title)
        raise RuntimeError("No model could be loaded: " + "; ".join(errors))


BACKEND_CHOICES = {"OpenAI (GPT-4o)": "openai", "OpenAI-compatible server": "openai-compatible",
                   "Local Qwen2.5-VL": "qwen"}
"""Backend choices as the page names them -> kind."""


class VLMService:
    """Builds the VLM backend a question asks for; the local Qwen2.5-VL is loaded once and shared.

    API keys are passed through to the OpenAI client of one question only: nothing here keeps them.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._qwen: dict[str, VLM] = {}

    def backend(self, choice: str, *, base_url: str | None, model: str | None, api_key: str | None) -> VLM:
        """The backend for one question; `IGGTError` with a message for the page when it cannot be made.

        An OpenAI-compatible server is asked first which models it serves (``/v1/models``): that
        fails within seconds when it is down, and without a model name the first one it lists is used.
        """
        kind = BACKEND_CHOICES.get(choice)
        if kind is None:
            raise IGGTError(f"Unknown VLM backend '{choice}': choose one of {', '.join(BACKEND_CHOICES)}.")
        if kind == "qwen":
            return self._qwen_backend(model)
        if kind == "openai-compatible" and not base_url:
            raise IGGTError("Enter the URL of the OpenAI-compatible server (e.g. http://localhost:8000/v1).")
        if kind == "openai" and not (api_key or os.environ.get(API_KEY_ENV)):
            raise IGGTError("Enter your OpenAI API key (it is used for this question only and never stored).")
        if kind == "openai-compatible":
            try:
                served = served_models(base_url, api_key)
            except VLMUnavailable as err:
                raise VLMUnavailable(f"The VLM failed: {err}.") from None
            if not model and not served:
                raise IGGTError(f"The server at {base_url} does not say which models it serves: enter the model "
                                "name (e.g. Qwen/Qwen2.5-VL-7B-Instruct for vLLM, qwen2.5vl for Ollama).")
            model = model or served[0]
        return make_backend("openai", model, base_url=base_url if kind == "openai-compatible" else None,
                            api_key=api_key)

    @staticmethod
    def embedder() -> Embedder | None:
        """The embedding model the agent pre-filters its find checks with (`grounding.agent.answer`'s
        ``embedder``), shared with the Find tab; None where its weights are not here (every instance is checked)."""
        try:
            return shared_embedder(os.environ.get(EMBEDDER_VARIABLE) or DEFAULT_EMBEDDER)
        except EmbedderUnavailable:
            return None

    def _qwen_backend(self, model: str | None) -> VLM:
        from grounding.vlm.qwen_backend import DEFAULT_MODEL_ID

        model_id = model or DEFAULT_MODEL_ID
        with self._lock:
            if model_id not in self._qwen:
                try:
                    self._qwen[model_id] = make_backend("qwen", model_id)
                except Exception as err:  # missing weights, no internet, out of memory: say so plainly
                    log.warning("could not load %s: %s", model_id, err)
                    raise IGGTError(f"The local model {model_id} could not be loaded: it needs its weights in "
                                     "the Hugging Face cache (or internet access) and enough memory; "
                                     "a GPU is strongly advised.") from None
            return self._qwen[model_id]
