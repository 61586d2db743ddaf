"""Work over a folder of scenes, one scene per process at a time, on any number of processes and nodes.

    python -m iggt reconstruct scenes/ --each-scene --out outputs/                 # one process
    accelerate launch --num_processes 4 -m iggt reconstruct scenes/ --each-scene --out outputs/
    accelerate launch --num_processes 4 -m iggt evaluate --data data/benchmark --out runs/eval

`accelerate launch` (or ``torchrun``) starts the processes; `run_sharded` hands each process
every n-th of the scenes not yet done, and gathers the results of all processes on the main
process, which alone writes the summary. A scene's result is saved as soon as it is done and a
scene with a saved result is skipped, so a run that was stopped resumes where it stopped
(the output folder must then be one that every process sees, e.g. a shared file system).
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from iggt.errors import IGGTError

T = TypeVar("T")
RESULT_NAME = "reconstruct.json"
"""Written last into each scene's output folder by ``reconstruct --each-scene``: the scene is done."""
SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class Processes:
    """This process's place among those launched together."""

    index: int = 0
    count: int = 1
    device: str = "auto"
    """The accelerator of this process (``cuda:<local rank>``) when launched on several GPUs."""

    @property
    def is_main(self) -> bool:
        return self.index == 0


def processes() -> Processes:
    """`accelerate`'s view of the launch when there are several processes; one process otherwise.

    A single process never starts accelerate's (process-wide, unchangeable) state, so a later
    `accelerate.Accelerator` in the same process is free to choose its own settings.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return Processes()
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # As `accelerate.Accelerator` does: CPU processes when asked (accelerate launch --cpu) or without a GPU.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    device = str(state.device) if state.device.type != "cpu" else "cpu"
    return Processes(state.process_index, state.num_processes, device)


def leave_processes(*, together: bool) -> None:
    """End the launch's process group, if this process joined one, while the interpreter is still whole.

    A group left to interpreter exit can abort a process that has done all its work: gloo's threads
    outlive Python's teardown ("terminate called without an active exception", SIGABRT). So can one
    left while another process still talks to it (a finished rank aborted about one run in twenty as
    the main rank wrote its report), so ``together`` first waits for every process at a barrier. Only
    after work that went well: a process that failed must not wait for others that may never come.
    """
    distributed = sys.modules.get("torch.distributed")  # never imports torch for a one-process run
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        if together:
            distributed.barrier()
        distributed.destroy_process_group()


def run_sharded(names: Sequence[str], work: Callable[[str], T], load_done: Callable[[str], T | None]) -> list[T] | None:
    """``work`` on every name not yet done (``load_done`` gives the saved result of one that is), spread over
    the processes; on the main process the results of all names in order, on the others None."""
    place = processes()
    finished: dict[str, T] = {}
    if place.is_main:
        finished = {name: result for name in names if (result := load_done(name)) is not None}
    pending = [[name for name in names if name not in finished]]
    if place.count > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(pending)  # the main process decides what is left to do
    results = {name: work(name) for name in pending[0][place.index::place.count]}
    parts = [results]
    if place.count > 1:
        from accelerate.utils import gather_object

        parts = gather_object([results])
    if not place.is_main:
        return None
    for part in parts:
        finished.update(part)
    return [finished[name] for name in names]


def write_json_atomically(path: Path, value) -> None:
    """Write ``path`` so that it exists only once complete (an interrupted run leaves no half file)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1))
    partial.replace(path)


# -- reconstruct --each-scene --------------------------------------------------------------
def scene_inputs(folders: Sequence[Path]) -> dict[str, Path]:
    """Every scene of the given folders: each sub-folder (of photos) and each video is one scene."""
    from iggt.views import VIDEO_EXTENSIONS

    scenes: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise IGGTError(f"--each-scene takes folders of scenes; {folder.name} is not a folder")
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() or entry.suffix.lower() in VIDEO_EXTENSIONS:
                name = entry.stem if entry.is_file() else entry.name
                if name in scenes:
                    raise IGGTError(f"two scenes are named {name!r}; rename one so their outputs do not collide")
                scenes[name] = entry
    if not scenes:
        raise IGGTError("--each-scene found no scenes: give folders holding one sub-folder of photos (or one video) "
                        "per scene")
    return scenes


def reconstruct_each_scene(args, reconstruct_scene: Callable[[list[Path], Path], dict]) -> int:
    """``reconstruct --each-scene``: ``reconstruct_scene(inputs, out)`` for every scene, sharded and resumable.

    Writes ``<out>/<scene>/`` per scene (with `RESULT_NAME` last) and, on the main process,
    ``<out>/summary.json`` listing every scene's result or failure.
    """
    scenes = scene_inputs([Path(path) for path in args.inputs])

    def work(name: str) -> dict:
        out = args.out / name
        try:
            result = {"scene": name, **reconstruct_scene([scenes[name]], out)}
        except IGGTError as error:  # a scene the user can fix must not end the run: report it and go on
            print(f"reconstruct: skipped {name}: {error}")
            return {"scene": name, "error": str(error)}
        write_json_atomically(out / RESULT_NAME, result)
        return result

    def load_done(name: str) -> dict | None:
        path = args.out / name / RESULT_NAME
        return json.loads(path.read_text()) if path.is_file() else None

    results = run_sharded(list(scenes), work, load_done)
    if results is None:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    failed = [r for r in results if "error" in r]
    write_json_atomically(args.out / SUMMARY_NAME, {"scenes": results, "scenes_failed": len(failed)})
    print(f"{len(results) - len(failed)} scenes reconstructed, {len(failed)} failed; summary: {args.out / SUMMARY_NAME}")
    return 1 if failed else 0
