"""The project as a user installs it: build the wheel, install it into a fresh virtual environment,
and run the `iggt` console script from another folder with the model shipped inside the wheel.

Honest shortcuts that keep this fast and offline: the wheel is built without build isolation
(the checkout's setuptools) and installed with ``--no-deps``; the fresh environment sees the
dependencies of the test environment through a ``.pth`` line placed after its own
site-packages, so `iggt` itself can only come from the wheel.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from helpers import REPO_ROOT, write_synthetic_photos

WHEEL_LIMIT_MB = 100
"""PyPI's default upper limit for one file."""
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "requirements.txt", "iggt", "grounding", "demo")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


def run(command: list, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of what the wheel is made of, so setuptools' build/ stays out of the checkout."""
    source = tmp_path_factory.mktemp("source")
    for name in PACKAGE_SOURCES:
        copy = shutil.copytree if (REPO_ROOT / name).is_dir() else shutil.copy2
        copy(REPO_ROOT / name, source / name, **({"ignore": IGNORED} if copy is shutil.copytree else {}))
    out = tmp_path_factory.mktemp("wheel")
    result = run([sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation",
                  "--wheel-dir", out], cwd=source, env={**os.environ, "PIP_NO_INPUT": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = out.glob("iggt-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The ``bin`` folder of a fresh virtual environment with the wheel installed."""
    env_dir = tmp_path_factory.mktemp("fresh-venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)  # its own pip, from the interpreter's bundled wheel
    python = env_dir / "bin" / "python"
    result = run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel], cwd=env_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=env_dir)
                .stdout.strip())
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir / "bin"


def test_the_wheel_carries_the_shipped_model_within_the_size_limit(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {"iggt/weights/iggt-small/config.json", "iggt/weights/iggt-small/model.safetensors"} <= set(names)
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "tools/"))]
    assert wheel.stat().st_size < WHEEL_LIMIT_MB * 1e6


def test_the_console_script_reconstructs_from_another_folder_with_the_shipped_model(installed, tmp_path):
    photos = write_synthetic_photos(tmp_path / "photos", views=2, size=84)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    where = run([installed / "python", "-c", "import iggt; print(iggt.__file__)"], cwd=elsewhere, env=env)
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout + where.stderr

    result = run([installed / "iggt", "reconstruct", photos[0].parent, "--out", "scene", "--size", "84",
                  "--formats", "json,scene"], cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "iggt-small" in result.stdout + result.stderr
    assert (elsewhere / "scene").is_dir() and any((elsewhere / "scene").iterdir())


def test_the_console_script_reports_a_bad_input_in_one_line(installed, tmp_path):
    result = run([installed / "iggt", "reconstruct", tmp_path / "nothing-here", "--out", "o"], cwd=tmp_path,
                 env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")


def test_checkpoint_loading_works_with_the_lowest_huggingface_hub_allowed(tmp_path):
    """requirements.txt allows huggingface_hub from its floor: run the checkpoint tests with exactly that version."""
    floor = next(line.split(">=")[1].strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
                 if line.startswith("huggingface_hub>="))
    target = tmp_path / "hub"
    installed = run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target,
                     f"huggingface_hub=={floor}"], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-2000:]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(REPO_ROOT)]), "HF_HUB_OFFLINE": ""}
    probe = run([sys.executable, "-c", "import huggingface_hub; print(huggingface_hub.__version__)"], cwd=REPO_ROOT,
                env=environment)
    assert probe.stdout.strip().startswith(floor), probe.stderr[-2000:]
    tests = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_checkpoint.py",
                 "tests/test_model_service.py"], cwd=REPO_ROOT, env=environment)
    assert tests.returncode == 0, tests.stdout[-3000:]
