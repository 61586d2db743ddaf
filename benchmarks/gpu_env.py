"""What a machine offers this project, as one JSON object: GPU, torch/CUDA versions, what imports.

    python benchmarks/gpu_env.py

Every package of requirements.txt (plus xformers, optional) is imported and reported with its
version or the error, and so is each part of the project, so a run on a machine without this
project's pins says at once what works there and what does not.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMPORT_NAMES = {"scikit-learn": "sklearn", "pyyaml": "yaml", "pillow": "PIL", "pillow-heif": "pillow_heif",
                "opencv-python": "cv2"}
"""Distribution name -> module name, where they differ by more than '-' vs '_'."""
OPTIONAL = ("xformers",)
PROJECT_MODULES = ("iggt.model.iggt", "iggt.reconstruct", "iggt.instances", "iggt.export", "iggt.training.trainer",
                   "iggt.evaluation.evaluate", "grounding.agent", "demo.ui")


def requirements() -> dict[str, str]:
    """Distribution name -> module name of the packages in requirements.txt, then the optional ones."""
    names = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#")[0])
        if match:
            name = match[1].lower()
            names[name] = IMPORT_NAMES.get(name, name.replace("-", "_"))
    return names | {name: name for name in OPTIONAL}


def try_import(module_name: str, distribution: str | None = None) -> dict[str, str | bool]:
    """``ok`` and the version (of the distribution when given), or the error."""
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any failure is the finding (ImportError, a broken native library, ...)
        return {"ok": False, "error": f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"}
    try:
        version = importlib.metadata.version(distribution) if distribution else ""
    except importlib.metadata.PackageNotFoundError:
        version = ""
    return {"ok": True, "version": version or str(getattr(module, "__version__", ""))}


def gpu_report() -> dict:
    import torch

    report = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    try:
        if torch.cuda.is_available():
            properties = torch.cuda.get_device_properties(0)
            report.update(device=properties.name, capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                          memory_gb=properties.total_memory / 1e9, multiprocessors=properties.multi_processor_count,
                          device_count=torch.cuda.device_count(), cudnn=torch.backends.cudnn.version(),
                          bf16_supported=torch.cuda.is_bf16_supported(), nccl=str(torch.cuda.nccl.version()))
    except Exception as error:  # a half-working driver is a finding, not a reason to lose the report
        report["cuda_error"] = f"{type(error).__name__}: {error}"
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        report["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as error:
        report["nvidia_smi"] = f"not available: {error}"
    return report


def main() -> None:
    sys.path.insert(0, str(REPO))
    report = {
        "python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9,
        "gpu": gpu_report(),
        "packages": {module: try_import(module, distribution) for distribution, module in requirements().items()},
        "project": {name: try_import(name) for name in PROJECT_MODULES},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
