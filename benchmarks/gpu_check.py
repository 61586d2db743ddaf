"""One command that turns a short lease of a CUDA machine into checks, figures and a trained model.

    bash benchmarks/gpu_check.sh                                   # on the GPU machine: results in $OUT
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-dry    # the same steps at CPU sizes (a CI test)

The steps, in order, each with a time budget (`Plan`); the whole run fits 9.5 minutes on one H200:

    env       benchmarks/gpu_env.py: GPU, torch and CUDA versions, what imports
    data      training scenes and the benchmark set (`python -m iggt generate`), on every core, in
              the background while the GPU runs the tests (finished before the speed step, so
              that it times a quiet machine)
    tests     pytest -m gpu tests/test_gpu.py (the CUDA tests)
    speed     benchmarks/gpu_speed.py: iggt-1b at 518x392 for 1 ... 100 views beside VGGT's H100 figures
    tracks    benchmarks/tracks.py: the 1B model's point tracker, 4096 points through 16 views at 518x392
    train     the small model from the shipped one, at 224 px with the released instance head and
              structure labels (the shipped recipe's last stage), for a
              fixed time (`python -m iggt train`, configs/small-cpu.yaml plus overrides)
    evaluate  `python -m iggt evaluate` of the trained and of the shipped model on the benchmark set
    scale     benchmarks/token_merge.py --cameras-only: the 1B model's aggregator + camera head at
              100 / 300 / 1000 views of 518x392, dense and with token merging (ratio 0.8), and the
              moonshot row (1000 views, merged; cameras against the dense run at 300 views)
    ba        benchmarks/ba.py: bundle adjustment over the 1B model's point tracks on 2 benchmark scenes
              (last: it runs in whatever time is left)

What it writes into the output folder (one level, 7 files, each under 16 MiB):

    summary.md, results.json   the results, rewritten after every step (a run cut short keeps what finished)
    log.txt                    every command and its output, line by line
    eval-trained.json, eval-shipped.json   the metrics.json of each evaluation
    model-1-of-2.safetensors, model-2-of-2.safetensors   the trained model (fp16) in parts; join them
                               with `python benchmarks/gpu_model.py join FOLDER --out DEST`

Only the standard library is imported here; each step runs in its own process and imports
what it needs, so a machine without this project's pins runs every step that it can.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_speed import speed_table  # noqa: E402

PYTHON = sys.executable
BENCHMARK_SEED = 10_000
"""The data-set seed of the fixed benchmark set (README "Evaluation"); training data uses others."""
TRAIN_SEED = 1_000
"""Data-set seed of the first generator process; process k uses TRAIN_SEED + k."""


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """Sizes and time budgets (seconds) of one run: `GPU_PLAN` on a GPU, `DRY_PLAN` on a CPU."""

    device: str
    speed_args: tuple[str, ...]
    """Arguments of benchmarks/gpu_speed.py."""
    generator_processes: int
    scenes_per_process: int
    scene_views: int
    scene_size: int
    benchmark_args: tuple[str, ...]
    """Arguments of `generate` for the benchmark set, after --out."""
    train_size: int
    train_overrides: tuple[str, ...]
    """Recipe keys changed on top of configs/small-cpu.yaml (paths, size and time are added)."""
    train_minutes: float | None
    """Training time (it shrinks when earlier steps ran long); None: optim.steps decides."""
    threads: int | None = None
    """OMP_NUM_THREADS of every step (None: the libraries' default); 1 where jobs share few cores."""
    budgets: dict[str, float] = field(default_factory=dict)
    total_s: float = 560.0
    """The whole run; steps that would end later get less time, or none."""
    openvocab_args: tuple[str, ...] = ()
    """Arguments of ``benchmarks/openvocab.py speed`` (base-size CLIP/SigLIP, random weights)."""
    tracks_args: tuple[str, ...] = ()
    """Arguments of ``benchmarks/tracks.py`` (point tracking, random weights of the release's shape)."""
    scale_args: tuple[str, ...] = ()
    """Arguments of ``benchmarks/token_merge.py`` (token merging and the 1000-view row, random weights)."""
    ba_args: tuple[str, ...] = ()
    """Arguments of ``benchmarks/ba.py`` after ``--data`` (bundle adjustment over the 1B model's tracks)."""


GPU_PLAN = Plan(
    device="cuda",
    speed_args=(),
    generator_processes=16, scenes_per_process=40, scene_views=8, scene_size=224,
    benchmark_args=("--count", "20", "--seed", str(BENCHMARK_SEED)),
    train_size=224,
    train_overrides=("data.images_per_batch=32", "data.view_range=[2,8]", "data.num_workers=8",
                     "optim.steps=1000", "optim.warmup_steps=50", "optim.lr_backbone=3e-4", "optim.lr_heads=3e-4",
                     "loss.sampling=balanced", "loss.background=structure", "loss.pixels_per_view=1024",
                     "run.mixed_precision=bf16",
                     "run.log_every=50", "run.checkpoint_every=100000"),
    train_minutes=2.0,
    budgets={"env": 40, "tests": 80, "speed": 130, "data": 60, "init": 30, "train": 60, "split": 30, "evaluate": 100,
             "openvocab": 40, "tracks": 45, "scale": 150, "ba": 60},
    openvocab_args=("--kind", "clip", "siglip", "--device", "cuda", "--size", "224"),
    tracks_args=("--preset", "iggt-1b", "--tracker", "release", "--device", "cuda", "--height", "392",
                 "--width", "518", "--memory-mb", "4096"),
    scale_args=("--cameras-only", "--checkpoint", "iggt-1b", "--device", "cuda", "--dtype", "bfloat16",
                "--views", "100", "300", "1000", "--ratios", "0", "0.8", "--height", "392", "--width", "518",
                "--dense-max-views", "300"),
    ba_args=("--checkpoint", "iggt-1b", "--tracks", "model", "--device", "cuda", "--scenes", "2",
             "--variants", "model,model+K"),
)
DRY_PLAN = Plan(
    device="cpu",
    speed_args=("--preset", "tiny", "--views", "1", "2", "--height", "56", "--width", "70", "--repeats", "1",
                "--device", "cpu"),
    generator_processes=1, scenes_per_process=3, scene_views=3, scene_size=56,
    benchmark_args=("--count", "2", "--seed", str(BENCHMARK_SEED), "--views", "3", "--size", "56", "56"),
    train_size=56,
    train_overrides=("data.images_per_batch=3", "data.view_range=[2,3]", "data.num_workers=0", "optim.steps=20",
                     "optim.warmup_steps=2", "loss.background=structure", "run.log_every=10",
                     "run.checkpoint_every=1000"),
    train_minutes=None,
    threads=1,
    budgets={"env": 60, "tests": 120, "speed": 120, "data": 120, "init": 60, "train": 180, "split": 60,
             "evaluate": 180, "openvocab": 120, "tracks": 60, "scale": 120, "ba": 120},
    total_s=900.0,
    openvocab_args=("--kind", "clip", "--device", "cpu", "--size", "56", "--objects", "2"),
    tracks_args=("--preset", "tiny", "--views", "2", "--points", "16", "--height", "56", "--width", "56",
                 "--memory-mb", "16", "--threads", "1"),
    scale_args=("--cameras-only", "--checkpoint", "tiny", "--device", "cpu", "--views", "2", "3",
                "--ratios", "0", "0.5", "--height", "56", "--width", "56", "--dense-max-views", "2"),
    ba_args=("--checkpoint", "tiny", "--tracks", "features", "--device", "cpu", "--scenes", "1",
             "--variants", "oracle"),
)
"""The CPU dry run: the same steps at tiny sizes (tiny preset for the speed table, 20 training steps)."""


# --------------------------------------------------------------------------- processes


@dataclass
class Job:
    """A command started in its own process group; its output goes to the log as it comes."""

    name: str
    process: subprocess.Popen
    started: float
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None
    timed_out: bool = False
    ended: float | None = None

    def wait(self, budget_s: float) -> "Job":
        """Wait up to ``budget_s`` seconds from now, then kill the whole group."""
        try:
            self.process.wait(timeout=max(budget_s, 0.1))
        except subprocess.TimeoutExpired:
            self.timed_out = True
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.ended = self.ended or time.monotonic()
        if self.reader is not None:
            self.reader.join(timeout=10)
        return self

    @property
    def ok(self) -> bool:
        return self.process.returncode == 0 and not self.timed_out

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def json_lines(self) -> list[dict]:
        """The lines of its output that are JSON objects (how the steps report figures)."""
        found = []
        for line in self.lines:
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return found


class Run:
    """The output folder: the log, the results and their summary, kept up to date."""

    def __init__(self, out: Path, work: Path, plan: Plan, dry_run: bool):
        self.out, self.work, self.plan = out, work, plan
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        self.deadline = time.monotonic() + plan.total_s
        self.log_file = (out / "log.txt").open("a", buffering=1)
        self.lock = threading.Lock()
        self.results: dict = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                              "dry_run": dry_run, "plan": dataclasses.asdict(plan), "steps": {}}
        self.environment = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_MININTERVAL="5")
        if plan.threads:
            self.environment["OMP_NUM_THREADS"] = str(plan.threads)

    def log(self, text: str) -> None:
        with self.lock:
            self.log_file.write(text + "\n")

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def budget(self, step: str, extra_s: float = 0.0) -> float:
        return min(self.plan.budgets[step] + extra_s, self.remaining())

    def start(self, name: str, command: list[str]) -> Job:
        self.log(f"\n[{name}] $ {' '.join(command)}")
        process = subprocess.Popen(command, cwd=REPO, env=self.environment, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        job = Job(name, process, time.monotonic())

        def pump() -> None:
            for raw in process.stdout:
                for line in raw.rstrip("\n").split("\r"):  # progress bars redraw with \r
                    if line.strip():
                        job.lines.append(line)
                        self.log(f"[{name}] {line}")
            job.ended = time.monotonic()  # end of output: the process has ended

        job.reader = threading.Thread(target=pump, daemon=True)
        job.reader.start()
        return job

    def run(self, name: str, command: list[str], budget_s: float) -> Job:
        """Start and wait (with no time left, the command is stopped at once and counts as timed out)."""
        return self.start(name, command).wait(budget_s)

    def record(self, step: str, job: Job | None, **values) -> None:
        """Store a step's outcome and rewrite results.json and summary.md."""
        entry = dict(values)
        if job is not None:
            status = "ok" if job.ok else "timed out" if job.timed_out else f"failed ({job.process.returncode})"
            entry.update(status=status, seconds=round(job.seconds, 1))
            if not job.ok:
                entry["output_tail"] = job.lines[-15:]
        self.results["steps"][step] = entry
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1))
        (self.out / "summary.md").write_text(summary(self.results))


# --------------------------------------------------------------------------- the steps


def step_env(run: Run) -> None:
    job = run.run("env", [PYTHON, "benchmarks/gpu_env.py"], run.budget("env"))
    report = (job.json_lines() or [{}])[-1]
    run.record("env", job, report=report)


def start_data(run: Run) -> list[Job]:
    """Training scenes in ``generator_processes`` parts (one seed each) and the benchmark set."""
    plan, generate = run.plan, [PYTHON, "-m", "iggt", "generate"]
    scene_args = ["--count", str(plan.scenes_per_process), "--views", str(plan.scene_views),
                  "--size", str(plan.scene_size), str(plan.scene_size)]
    jobs = [run.start(f"data-{k}", [*generate, "--out", str(run.work / "train" / f"part_{k:02d}"),
                                    "--seed", str(TRAIN_SEED + k), *scene_args])
            for k in range(plan.generator_processes)]
    jobs.append(run.start("benchmark", [*generate, "--out", str(run.work / "benchmark"), *plan.benchmark_args]))
    return jobs


def step_tests(run: Run) -> None:
    report_xml = run.work / "tests.xml"
    job = run.run("tests", [PYTHON, "-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-rA", "-q",
                            f"--junitxml={report_xml}"], run.budget("tests"))
    run.record("tests", job, **pytest_outcomes(report_xml))


def pytest_outcomes(report_xml: Path) -> dict:
    """Counts, and each test's outcome with the message of a failure or skip, from pytest's JUnit XML."""
    if not report_xml.is_file():
        return {"cases": []}
    cases = []
    for case in ElementTree.parse(report_xml).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                outcome, message = kind, (element.get("message") or "")[:300]
        cases.append({"test": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)),
                      "message": message})
    counts = {kind: sum(c["outcome"] == kind for c in cases) for kind in ("passed", "failure", "error", "skipped")}
    return {"counts": counts, "cases": cases}


def step_speed(run: Run) -> None:
    job = run.run("speed", [PYTHON, "benchmarks/gpu_speed.py", *run.plan.speed_args], run.budget("speed"))
    lines = job.json_lines()
    run.record("speed", job, build=next((line for line in lines if "built_s" in line), None),
               rows=[line for line in lines if "views" in line])


def step_openvocab(run: Run) -> None:
    """Embedding every instance of a 10-view scene, then text queries, with base-size CLIP/SigLIP."""
    job = run.run("openvocab", [PYTHON, "benchmarks/openvocab.py", "speed", *run.plan.openvocab_args],
                  run.budget("openvocab"))
    run.record("openvocab", job, rows=[line for line in job.json_lines() if "embed_s" in line])


def step_tracks(run: Run) -> None:
    job = run.run("tracks", [PYTHON, "benchmarks/tracks.py", *run.plan.tracks_args], run.budget("tracks"))
    run.record("tracks", job, rows=[line for line in job.json_lines() if "track_s" in line])


def step_scale(run: Run) -> None:
    job = run.run("scale", [PYTHON, "benchmarks/token_merge.py", *run.plan.scale_args], run.budget("scale"))
    run.record("scale", job, rows=[line for line in job.json_lines() if "peak_gb" in line])


def step_ba(run: Run) -> None:
    """benchmarks/ba.py on the benchmark set: the 1B model's tracks through bundle adjustment (random
    weights here: it checks the path and times it; the figures need the released weights)."""
    job = run.run("ba", [PYTHON, "benchmarks/ba.py", "--data", str(run.work / "benchmark"), *run.plan.ba_args],
                  run.budget("ba"))
    run.record("ba", job, rows=[line for line in job.json_lines() if "variant" in line])


def step_data(run: Run, jobs: list[Job]) -> bool:
    deadline = time.monotonic() + run.budget("data")
    for job in jobs:
        job.wait(deadline - time.monotonic())
    failed = [job.name for job in jobs if not job.ok]
    run.record("data", None, status="ok" if not failed else f"failed: {', '.join(failed)}",
               seconds=round(max(job.seconds for job in jobs), 1),
               train_scenes=run.plan.generator_processes * run.plan.scenes_per_process)
    return not failed


def step_train(run: Run) -> Path | None:
    """Fine-tune the shipped model at ``train_size``; returns the joined trained model, or None."""
    plan, work = run.plan, run.work
    for earlier in ("init", "run", "joined"):  # of a previous try on the same machine (its scenes are kept)
        shutil.rmtree(work / earlier, ignore_errors=True)
    init = run.run("init", [PYTHON, "benchmarks/gpu_model.py", "init", "--size", str(plan.train_size),
                            "--out", str(work / "init")], run.budget("init"))
    if not init.ok:
        run.record("train", init)
        return None
    minutes = plan.train_minutes
    reserve_s = plan.budgets["split"] + plan.budgets["evaluate"] + 45  # start-up and export of the trainer
    if minutes is not None:
        minutes = max(0.25, min(minutes, (run.remaining() - reserve_s) / 60))
    overrides = [f"model.init={work / 'init'}", f"model.overrides.img_size={plan.train_size}",
                 "model.overrides.apply_discarded_cross_attention=false", f"data.root={work / 'train'}",
                 f"data.samples.image_size={plan.train_size}", f"run.output_dir={work / 'run'}",
                 "run.export_dtype=float16", f"run.max_minutes={'null' if minutes is None else round(minutes, 2)}",
                 *plan.train_overrides]
    train = run.run("train", [PYTHON, "-m", "iggt", "train", "--config", "configs/small-cpu.yaml", *overrides],
                    run.budget("train", extra_s=60 * (minutes or 0)))
    run.record("train", train, minutes=minutes, overrides=overrides, **training_figures(train, work / "run"))
    if not train.ok:
        return None
    split = run.run("split", [PYTHON, "benchmarks/gpu_model.py", "split", str(work / "run" / "model"),
                              "--out", str(run.out)], run.budget("split"))
    joined = run.run("join", [PYTHON, "benchmarks/gpu_model.py", "join", str(run.out), "--out", str(work / "joined")],
                     run.budget("split")) if split.ok else split
    parts = sorted(p.name for p in run.out.glob("model-*-of-*.safetensors"))
    run.record("model", joined, parts={name: (run.out / name).stat().st_size for name in parts})
    return work / "joined" if joined.ok else None


def training_figures(job: Job, run_dir: Path) -> dict:
    """Steps done and the last logged loss (from the progress bar), as far as they can be read."""
    figures: dict = {}
    progress = sorted(run_dir.glob("checkpoints/step_*/progress.json"))
    if progress:
        figures["steps_done"] = json.loads(progress[-1].read_text())["step"]
    for line in reversed(job.lines):
        match = re.search(r"(\d+)/(\d+) \[[^\]]*loss=([\d.]+)", line)
        if match:
            figures.update(last_logged_step=int(match[1]), planned_steps=int(match[2]), last_loss=float(match[3]))
            break
    return figures


def start_evaluation(run: Run, name: str, checkpoint: Path | None) -> Job:
    shutil.rmtree(run.work / f"eval-{name}", ignore_errors=True)
    command = [PYTHON, "-m", "iggt", "evaluate", "--data", str(run.work / "benchmark"),
               "--out", str(run.work / f"eval-{name}"), "--device", run.plan.device, "--no-baselines",
               "--allow-failures"]
    return run.start(f"evaluate-{name}", command + (["--checkpoint", str(checkpoint)] if checkpoint else []))


def finish_evaluation(run: Run, job: Job, name: str, deadline: float) -> None:
    job.wait(deadline - time.monotonic())
    metrics = run.work / f"eval-{name}" / "metrics.json"
    figures = {}
    if metrics.is_file():
        shutil.copyfile(metrics, run.out / f"eval-{name}.json")
        summary_ = json.loads(metrics.read_text())
        figures = {"model": summary_.get("model"), "scenes_evaluated": summary_.get("scenes_evaluated"),
                   "scenes_failed": summary_.get("scenes_failed"),
                   "instances": summary_["aggregate"]["methods"].get("iggt", {}),
                   "geometry": summary_["aggregate"]["geometry"]}
    run.record(f"evaluate-{name}", job, **figures)


# --------------------------------------------------------------------------- the summary


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _plain(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary(results: dict) -> str:
    """summary.md: everything a reader needs, from whatever steps have finished."""
    steps = results["steps"]
    lines = [f"# GPU check{' (CPU dry run)' if results['dry_run'] else ''}, started {results['started']}", ""]
    env = steps.get("env", {}).get("report", {})
    if env:
        gpu = env.get("gpu", {})
        missing = [name for name, found in {**env.get("packages", {}), **env.get("project", {})}.items()
                   if not found.get("ok")]
        lines += ["## Environment", "",
                  f"- {gpu.get('device', 'no CUDA device')} ({gpu.get('memory_gb', 0):.0f} GB), "
                  f"capability {gpu.get('capability', '-')}, nvidia-smi: {gpu.get('nvidia_smi', '-')}",
                  f"- Python {env.get('python')}, torch {gpu.get('torch')} (CUDA {gpu.get('torch_cuda')}, cuDNN "
                  f"{gpu.get('cudnn', '-')}, NCCL {gpu.get('nccl', '-')}), {env.get('cpu_count')} CPUs, "
                  f"{env.get('memory_gb', 0):.0f} GB",
                  f"- does not import: {', '.join(missing) or 'nothing (all import)'}", ""]
    tests = steps.get("tests")
    if tests:
        counts = tests.get("counts", {})
        lines += ["## CUDA tests (`pytest -m gpu tests/test_gpu.py`)", "",
                  f"{tests['status']}: " + ", ".join(f"{n} {k}" for k, n in counts.items()), ""]
        lines += [f"- {c['test']}: {c['outcome']}" + (f" ({c['message']})" if c["message"] else "")
                  for c in tests.get("cases", [])] + [""]
    speed = steps.get("speed")
    if speed:
        build = speed.get("build") or {}
        lines += ["## Speed and memory (`benchmarks/gpu_speed.py`)", "",
                  f"{speed['status']}; weights {build.get('weights_gb', 0):.1f} GB (fp32), built in "
                  f"{build.get('built_s', 0):.1f} s; aggregator under autocast, heads in fp32.", "",
                  speed_table(speed.get("rows", [])), ""]
    openvocab = steps.get("openvocab")
    if openvocab:
        lines += ["## Open-vocabulary speed (`benchmarks/openvocab.py speed`, random weights of the real shape)", "",
                  f"{openvocab['status']}", "", "| model | instances | regions | embed all (s) | query median (ms) |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['model']} | {r['instances']} | {r['regions']} | {r['embed_s']:.2f} | {r['query_ms']:.1f} |"
                  for r in openvocab.get("rows", [])] + [""]
    tracks = steps.get("tracks")
    if tracks:
        lines += ["## Point tracking (`benchmarks/tracks.py`, random weights of the release's tracker)", "",
                  f"{tracks['status']}", "", "| model | views | image | points | per pass | features (s) | "
                  "tracking (s) | peak memory (MB) |", "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['preset']} | {r['views']} | {r['image']} | {r['points']} | {r['chunk']} | {r['features_s']} | "
                  f"{r['track_s']} | {r.get('cuda_peak_mb', r.get('rss_peak_mb'))} |" for r in tracks.get("rows", [])]
        lines += [""]
    train = steps.get("train")
    if train:
        limit = "no time limit" if train.get("minutes") is None else f"time limit {train['minutes']} min"
        lines += ["## Training (from the shipped model)", "",
                  f"{train['status']} after {train.get('seconds', 0):.0f} s: {train.get('steps_done', '?')} steps "
                  f"({limit}), last logged loss {train.get('last_loss', '?')}", ""]
    if "model" in steps:
        parts = steps["model"].get("parts", {})
        lines += [f"Trained model: {', '.join(f'{n} ({s / 2**20:.1f} MiB)' for n, s in parts.items()) or 'none'}; "
                  "join with `python benchmarks/gpu_model.py join FOLDER --out DEST`.", ""]
    evaluated = {name: steps[f"evaluate-{name}"] for name in ("trained", "shipped") if f"evaluate-{name}" in steps}
    if evaluated:
        lines += ["## Evaluation on the benchmark set (`python -m iggt evaluate`, clustering large, no baselines)", "",
                  "| model | scenes | T-mIoU | T-SR | AP | AP50 | mIoU 2D | AbsRel | δ<1.25 | Chamfer | AUC@30 |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, entry in evaluated.items():
            instances, geometry = entry.get("instances", {}), entry.get("geometry", {})
            percents = [_percent(instances.get(key)) for key in ("t_miou", "t_sr", "ap", "ap50", "miou_2d")]
            plain = [_plain(geometry.get("abs_rel_view")), _percent(geometry.get("delta1_view")),
                     _plain(geometry.get("points_chamfer")), _percent(geometry.get("auc@30"))]
            lines.append(f"| {name}: {entry.get('model', entry['status'])} | {entry.get('scenes_evaluated', 0)} | "
                         + " | ".join(percents + plain) + " |")
        lines.append("")
    scale = steps.get("scale")
    if scale:
        lines += ["## Token merging and 1000 views (`benchmarks/token_merge.py --cameras-only`, aggregator + "
                  "camera head, random 1B weights)", "", f"{scale['status']}", "",
                  "| views | image | merge ratio | seconds | peak GB | rotation vs dense (deg) | dense run's views |",
                  "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['views']} | {r['width']}x{r['height']} | {r['ratio']} | {r['seconds']:.2f} | "
                  f"{r['peak_gb']:.1f} | {_plain(r['rotation_vs_dense_deg'])} | {r['dense_views']} |"
                  for r in scale.get("rows", [])] + [""]
    ba = steps.get("ba")
    if ba:
        lines += ["## Bundle adjustment (`benchmarks/ba.py`, random 1B weights: the path and its time, not the gain)",
                  "", f"{ba['status']}", "", "| variant | tracks | adjusted | rot err (deg) | AUC@30 | reproj (px) |",
                  "| --- | --- | ---: | --- | --- | --- |"]
        lines += [f"| {r['variant']} | {r['tracks']} | {r['adjusted']}/{r['scenes']} | {_plain(r['rot_before'])} -> "
                  f"{_plain(r['rot_after'])} | {_plain(r['auc30_before'])} -> {_plain(r['auc30_after'])} | "
                  f"{_plain(r['reproj_before'])} -> {_plain(r['reproj_after'])} |" for r in ba.get("rows", [])] + [""]
    lines += ["## Steps", "", "| step | status | seconds |", "| --- | --- | ---: |"]
    lines += [f"| {name} | {entry.get('status', '')} | {entry.get('seconds', '')} |" for name, entry in steps.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", REPO / "runs" / "gpu-check" / "out")),
                        help="results folder (default: $OUT, else runs/gpu-check/out)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "gpu-check" / "work",
                        help="scenes, checkpoints and reports that do not come back")
    parser.add_argument("--dry-run", action="store_true", help="CPU sizes: tiny speed table, 20 training steps")
    parser.add_argument("--train-minutes", type=float, default=None, help="override the plan's training time")
    args = parser.parse_args()
    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    if args.train_minutes is not None:
        plan = dataclasses.replace(plan, train_minutes=args.train_minutes)
    run = Run(args.out.resolve(), args.work.resolve(), plan, args.dry_run)

    step_env(run)
    data_jobs = start_data(run)  # CPU work, while the GPU runs the tests
    step_tests(run)
    data_ready = step_data(run, data_jobs)
    step_speed(run)
    step_openvocab(run)
    step_tracks(run)
    if not data_ready:
        step_scale(run)
        return
    shipped = start_evaluation(run, "shipped", None)  # beside the training: the GPU has room for both
    trained = step_train(run)
    deadline = time.monotonic() + run.budget("evaluate")
    if trained is not None:
        finish_evaluation(run, start_evaluation(run, "trained", trained), "trained", deadline)
    finish_evaluation(run, shipped, "shipped", deadline)
    step_scale(run)
    step_ba(run)
    run.log(f"\ndone in {plan.total_s - run.remaining():.0f} s")


if __name__ == "__main__":
    main()
