"""``iggt evaluate`` over several processes and nodes, resumable: the same metrics.json as one process.

Each process evaluates its share of the scene records (`iggt.batch.run_sharded`) and saves every
scene's result as it finishes, under ``<out>/scenes/`` (figures in JSON, the few views of the mask
plot in an ``.npz``); the main process gathers them all, in the records' order, and writes the
report with `iggt.evaluation.evaluate.write_report`, as a single-process run does. A scene with a
saved result is skipped when the same evaluation runs again (a failed one is retried); results
made with other settings (``settings.json``) are discarded first.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from iggt.batch import processes, run_sharded, write_json_atomically
from iggt.evaluation.evaluate import (EvaluationConfig, MaskPanel, SceneResult, _json_ready, evaluate_directory,
                                      scene_directories, write_report)

SCENES_FOLDER = "scenes"
SETTINGS_NAME = "settings.json"
RUN_ONLY_SETTINGS = ("out", "device", "max_scenes", "worst_scenes")
"""`EvaluationConfig` fields that change no scene's figures."""


def run_sharded_evaluation(config: EvaluationConfig, merge_ratio: float = 0.0) -> dict | None:
    """Evaluate ``config.data`` on every launched process; metrics.json's content on the main process, else None."""
    from accelerate.utils import wait_for_everyone

    from iggt.loading import load_model
    from iggt.model.token_merge import set_merge_ratio
    from iggt.reconstruct import Reconstructor

    place = processes()
    directories = {_key(directory, config.data): directory for directory in scene_directories(config)}
    folder = config.out / SCENES_FOLDER
    if place.is_main:
        _start_or_resume(folder, _settings(config, merge_ratio))
    if place.count > 1:
        wait_for_everyone()
    device = place.device if config.device == "auto" else config.device
    model = load_model(config.checkpoint)
    set_merge_ratio(model, merge_ratio)
    reconstructor = Reconstructor(model, device=device)

    def work(key: str) -> tuple[SceneResult, MaskPanel] | dict:
        outcome = evaluate_directory(directories[key], reconstructor, config)
        if not isinstance(outcome, dict):
            _save(folder, key, *outcome)
        return outcome

    outcomes = run_sharded(list(directories), work, lambda key: _load(folder, key))
    if outcomes is None:
        return None
    scored = [outcome for outcome in outcomes if not isinstance(outcome, dict)]
    failures = [outcome for outcome in outcomes if isinstance(outcome, dict)]
    return write_report(config, reconstructor.model_name, [result for result, _ in scored], failures,
                        [panel for _, panel in scored])


def _key(directory: Path, data: Path) -> str:
    """A file name unique to one record (records are found recursively, so names may repeat)."""
    return "__".join(directory.relative_to(data).parts) or directory.name


def _settings(config: EvaluationConfig, merge_ratio: float) -> dict:
    """What a scene's result depends on (every setting but where and how fast): a result saved under other
    settings is not reused."""
    settings = {name: value for name, value in asdict(config).items() if name not in RUN_ONLY_SETTINGS}
    return json.loads(json.dumps(_json_ready({**settings, "merge_ratio": merge_ratio}), default=str))


def _start_or_resume(folder: Path, settings: dict) -> None:
    saved = folder / SETTINGS_NAME
    if saved.is_file() and json.loads(saved.read_text()) != settings:
        print(f"evaluate: {folder.name}/ holds results of other settings; starting afresh")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomically(saved, settings)


def _save(folder: Path, key: str, result: SceneResult, panel: MaskPanel) -> None:
    """The panel's arrays first, its figures last: a scene counts as done once its JSON exists."""
    with open(folder / f"{key}.npz", "wb") as file:
        np.savez_compressed(file, images=panel.images, gt_ids=panel.gt_ids,
                            **{f"labels_{method}": labels for method, labels in panel.labels.items()})
    write_json_atomically(folder / f"{key}.json", _json_ready({
        "result": asdict(result),
        "panel": {"name": panel.name, "score": panel.score,
                  "matches": {method: [[int(p), int(g)] for p, g in pairs.items()]
                              for method, pairs in panel.matches.items()}}}))


def _load(folder: Path, key: str) -> tuple[SceneResult, MaskPanel] | None:
    path = folder / f"{key}.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    result = SceneResult(**saved["result"])
    for figures in (result.geometry, result.seconds, *result.methods.values()):  # NaN was written as null
        figures.update({name: math.nan for name, value in figures.items() if value is None})
    with np.load(folder / f"{key}.npz") as arrays:
        labels = {name.removeprefix("labels_"): arrays[name] for name in arrays.files if name.startswith("labels_")}
        panel = MaskPanel(saved["panel"]["name"], _nan_if_none(saved["panel"]["score"]), arrays["images"],
                          arrays["gt_ids"], labels,
                          {method: dict(map(tuple, pairs)) for method, pairs in saved["panel"]["matches"].items()})
    return result, panel


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value
