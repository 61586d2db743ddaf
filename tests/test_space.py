"""The repository as a Hugging Face Space: what an upload would send stays within the Hub's rules,
the README's front matter configures the Space, and the app starts on a Space without network.

The Hub refuses binary files and files over 10 MB that are not LFS/Xet files; a file is binary
here by git's own rule (a NUL byte in its first 8000 bytes), and LFS by `.gitattributes` as git
reads it (``git check-attr``). The files sent are those an upload or a push sends: everything
not ignored by `.gitignore`.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
import yaml
from packaging.requirements import Requirement

from helpers import REPO_ROOT
from grounding.embedders import DEFAULT_MODEL as DEFAULT_EMBEDDER
from iggt.checkpoints import OFFICIAL_REPO_ID
from tools.app_server import free_port, running_app

HUB_PLAIN_FILE_LIMIT = 10 * 1024 * 1024
"""Larger files must be LFS/Xet files."""

if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
    pytest.skip("needs git and a git checkout to know which files an upload sends", allow_module_level=True)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout


def uploaded_files() -> list[str]:
    listed = git("ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    return sorted({name for name in listed if name and (REPO_ROOT / name).is_file()})


def is_binary(path: Path) -> bool:
    with open(path, "rb") as file:
        return b"\0" in file.read(8000)


def front_matter() -> dict:
    text = (REPO_ROOT / "README.md").read_text()
    assert text.startswith("---\n"), "the README must start with the Space's YAML front matter"
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_binaries_and_large_files_are_lfs_files():
    files = uploaded_files()
    attributes = git("check-attr", "filter", "--", *files).splitlines()
    lfs = {line.rsplit(": filter: ", 1)[0] for line in attributes if line.endswith(": filter: lfs")}
    must_be_lfs = [name for name in files
                   if (REPO_ROOT / name).stat().st_size > HUB_PLAIN_FILE_LIMIT or is_binary(REPO_ROOT / name)]
    assert must_be_lfs, "expected the shipped model and the example pictures among the files"
    missing = [name for name in must_be_lfs if name not in lfs]
    assert not missing, f"add patterns for these to .gitattributes: {missing}"


def test_front_matter_configures_the_space():
    config = front_matter()
    assert config["sdk"] == "gradio" and (REPO_ROOT / config["app_file"]).is_file()
    gradio_requirement = next(Requirement(line) for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
                              if line.startswith("gradio"))
    assert config["sdk_version"] in gradio_requirement.specifier, "the Space's gradio must satisfy requirements.txt"
    assert version("gradio") in gradio_requirement.specifier
    assert OFFICIAL_REPO_ID in config["preload_from_hub"], "a GPU Space should not download 5 GB on its first request"
    assert DEFAULT_EMBEDDER in config["preload_from_hub"], "Find should not download its model on the first query"


def test_the_app_starts_on_a_space_without_network_on_the_small_model_and_says_why(tmp_path):
    unreachable_hub = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the Hub cannot be reached
    proxies = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    env = {"SPACE_ID": "someone/iggt", "HF_HUB_OFFLINE": "", "HF_ENDPOINT": unreachable_hub,
           "HF_HOME": str(tmp_path / "hf-home"), "IGGT_CHECKPOINT": "", **{name: "" for name in proxies}}
    with running_app(tmp_path, None, extra_env=env) as app:
        page = httpx.get(app.url + "config", timeout=30).text
    banner = re.search(r"Model:\*\* ([^\"]*)", page)
    assert banner and banner[1].startswith("IGGT-small"), page[:500]
    assert "Hugging Face Hub" in banner[1], "the banner should say why the 1B weights were not used"
    assert f"could not load model {OFFICIAL_REPO_ID}" in app.log_text()
    assert "unreachable" in app.log_text()
