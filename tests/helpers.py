"""Plain helpers of the tests (pytest discourages importing from conftest.py). Running the app and
driving its page, which benchmarks and scripts need too, are in the repository's `tools/`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent


def write_synthetic_photos(folder: Path, seed: int = 3, views: int = 3, size: int = 112) -> list[Path]:
    """PNG photos of one generated scene (the pictures only, as a user would upload them)."""
    from iggt.data.synthetic import GeneratorConfig, generate_scene

    record = generate_scene(seed, GeneratorConfig(num_views=views, image_size=(size, size), object_count=(3, 5)))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(record.images):
        paths.append(folder / f"photo_{index}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def run_distributed(arguments: list[str], *, nodes: int = 1, processes_per_node: int = 1,
                    timeout: float = 300) -> list[str]:
    """``torchrun ARGUMENTS`` on CPU processes (gloo), every node on this machine (127.0.0.1): the code path of
    several GPUs or machines, with another collective backend. Returns each node launcher's output; a launch
    that fails or hangs fails the test."""
    import pytest

    from tools.app_server import free_port

    port = free_port()
    environment = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    launchers = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--node_rank={rank}",
         f"--nproc_per_node={processes_per_node}", "--master_addr=127.0.0.1", f"--master_port={port}", *arguments],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(nodes)]
    try:
        outputs = [launcher.communicate(timeout=timeout)[0] for launcher in launchers]
    except subprocess.TimeoutExpired:
        import psutil

        for launcher in launchers:  # the launchers started here, and their workers
            started = psutil.Process(launcher.pid)
            for process in [*started.children(recursive=True), started]:
                process.kill()
        pytest.fail(f"the distributed run did not finish within {timeout} s (hung)")
    for launcher, output in zip(launchers, outputs):
        assert launcher.returncode == 0, output[-3000:]
    return outputs
