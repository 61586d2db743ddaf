"""Judging grounding answers on scenes whose instances a model predicted, and the benchmark that does it."""
import importlib.util
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grounding.agent import Answer
from grounding.evaluation import (Question, benchmark_scene, judge_on_objects, make_questions, match_to_objects,
                                  resample_record, run_questions, unnamed_oracle)
from grounding.vlm.openai_backend import OpenAIConfig, OpenAIVLM
from iggt.views import LoadedView, preprocess

REPOSITORY = Path(__file__).resolve().parents[1]


def two_views() -> np.ndarray:
    """Ground truth of 2 views, 4 x 6 pixels: objects 1 (8 px per view), 2 (4 px), 3 (2 px); 0 = floor."""
    view = np.array([[1, 1, 1, 1, 0, 0],
                     [1, 1, 1, 1, 0, 0],
                     [0, 0, 0, 0, 2, 2],
                     [3, 3, 0, 0, 2, 2]])
    return np.stack([view, view])


def reply(instance_ids: list[int], text: str = "") -> Answer:
    return Answer("?", "agent", text, instance_ids, {}, [], 0, 0.0, 0.0)


# -- matching instances to objects --------------------------------------------------------------

def test_perfect_instances_stand_for_their_objects():
    gt = two_views()
    labels = np.where(gt > 0, 10 * gt, -1)  # any instance ids, background -1
    assert match_to_objects(gt, labels) == {10: 1, 20: 2, 30: 3}


def test_merged_objects_stand_for_the_larger_one_only_when_it_dominates():
    gt = two_views()
    merged_with_small = np.where(np.isin(gt, (1, 3)), 0, np.where(gt == 2, 1, -1))  # 16 + 4 px: IoU 0.8 with 1
    assert match_to_objects(gt, merged_with_small) == {0: 1, 1: 2}
    two_small = np.where(np.isin(gt, (2, 3)), 0, -1)  # 8 + 4 px: IoU 2/3 with 2, 1/3 with 3
    assert match_to_objects(gt, two_small) == {0: 2}
    three = np.where(gt > 0, 0, -1)  # one instance over everything: 16 / 28 with object 1
    assert match_to_objects(gt, three) == {0: 1}
    assert match_to_objects(gt, three, min_iou=0.6) == {}


def test_a_split_object_is_its_larger_part():
    gt = two_views()
    labels = np.where(gt > 0, gt, -1)
    labels[:, :2, 3] = 7  # object 1: 6 px per view stay instance 1, 2 px become instance 7
    assert match_to_objects(gt, labels) == {1: 1, 2: 2, 3: 3}
    labels[:, :2, 2] = 7  # halves of 4 + 4 px reach exactly 0.5 both (the one tie the threshold allows)
    assert match_to_objects(gt, labels) == {1: 1, 7: 1, 2: 2, 3: 3}
    assert match_to_objects(gt, labels, min_iou=0.51) == {2: 2, 3: 3}


def test_floor_taken_as_an_object_matches_nothing():
    gt = two_views()
    labels = np.where(gt > 0, gt, 5)  # the floor is instance 5
    assert match_to_objects(gt, labels) == {1: 1, 2: 2, 3: 3}
    grown = np.where(gt == 3, -1, np.where(gt == 2, 2, 1))  # object 1 and all the floor: 16 of 36 px
    assert match_to_objects(gt, grown) == {2: 2}


def test_iou_counts_every_view():
    gt = two_views()
    labels = np.where(gt > 0, gt, -1)
    labels[1][gt[1] == 1] = 4  # view 1 shows object 1 as another instance (per view IoU 1) ...
    labels[1, 0, 0] = 1  # ... but one pixel: instance 1 holds 9 of its 16 px over both views, instance 4 7
    assert match_to_objects(gt, labels) == {1: 1, 2: 2, 3: 3}


# -- judging answers ----------------------------------------------------------------------------

COUNT = Question("How many cubes are there?", "count", frozenset({0, 1}), frozenset({1, 2}), "2")


def test_an_answer_is_right_when_its_instances_are_the_expected_objects():
    matches = {10: 1, 20: 2, 30: 3}
    assert judge_on_objects(COUNT, reply([20, 10], "There are 2 cubes."), matches)
    assert not judge_on_objects(COUNT, reply([10, 20], "There are 3 cubes."), matches)  # wrong number
    assert not judge_on_objects(COUNT, reply([10], "There are 2 cubes."), matches)  # one object missing
    assert not judge_on_objects(COUNT, reply([10, 20, 30], "There are 2 cubes."), matches)  # one too many


def test_unmatched_or_doubled_instances_make_an_answer_wrong():
    question = Question("Where is the red cube?", "find", frozenset({0}), frozenset({1}))
    assert judge_on_objects(question, reply([10]), {10: 1})
    assert not judge_on_objects(question, reply([10, 99]), {10: 1})  # 99: floor, a fragment, a merge
    assert not judge_on_objects(question, reply([10, 11]), {10: 1, 11: 1})  # one object, two instances
    assert not judge_on_objects(question, reply([]), {10: 1})


@pytest.fixture(scope="module")
def oracle_outcomes(vlm_server):
    """The seeing VLM's answers on two oracle scenes in both modes, and each scene's instance -> object map."""
    answered = []
    for seed in (0, 3):
        record, scene = benchmark_scene(seed)
        matches = match_to_objects(record.instance_ids, scene.instances.labels)
        for mode in ("verify", "agent"):
            backend = OpenAIVLM(OpenAIConfig(model="seeing", base_url=vlm_server.url))
            answered += [(outcome, matches) for outcome in run_questions(scene, make_questions(record, scene),
                                                                         backend, mode)]
    return answered


def test_on_the_oracle_the_object_judging_gives_the_exact_verdicts(oracle_outcomes):
    """Real answers, and the same answers spoiled (other instances, no text), get the same verdicts both ways."""
    verdicts = []
    for outcome, matches in oracle_outcomes:
        question, answer = outcome.question, outcome.reply
        other = sorted(set(matches) - question.expected_ids)[:1]
        for variant in (answer, replace(answer, instance_ids=other), replace(answer, text=""),
                        replace(answer, instance_ids=answer.instance_ids + other)):
            verdict = question.is_correct(variant)
            assert judge_on_objects(question, variant, matches) == verdict, (question.text, variant.text)
            verdicts.append(verdict)
    assert len(oracle_outcomes) > 20 and any(verdicts) and not all(verdicts)


# -- the ground truth at the model's pixels -----------------------------------------------------

def test_a_record_resampled_to_the_model_input_keeps_its_geometry():
    record, oracle = benchmark_scene(3)
    views = [LoadedView(Image.fromarray(image), f"{i}", record.image_size) for i, image in enumerate(record.images)]
    images, transforms, _ = preprocess(views, "crop", 112, grid_multiple=2)
    model_input = replace(oracle, images=images.permute(0, 2, 3, 1).numpy(), view_transforms=transforms)

    small = resample_record(record, model_input)
    assert small.image_size == (84, 112)
    assert np.array_equal(small.instance_ids, record.instance_ids[:, 1::2, 1::2])  # the pixel under each centre
    perfect = unnamed_oracle(small)
    centroids = {int(record.instance_ids[oracle.instances.labels == i.id][0]): i.centroid
                 for i in oracle.instances.info}
    for info in perfect.instances.info:  # unprojected with the resized intrinsics: the same 3D objects
        object_id = int(small.instance_ids[perfect.instances.labels == info.id][0])
        assert np.linalg.norm(np.subtract(info.centroid, centroids[object_id])) < 0.03
    assert match_to_objects(small.instance_ids, perfect.instances.labels).keys() == {
        i.id for i in perfect.instances.info}


# -- the benchmark ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def benchmark_script():
    """benchmarks/grounding.py as a module (its file name would shadow the `grounding` package on sys.path)."""
    spec = importlib.util.spec_from_file_location("grounding_benchmark", REPOSITORY / "benchmarks" / "grounding.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def table_rows(table: str) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    """The markdown table's header cells and its rows by (mode, kind)."""
    lines = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table.strip().splitlines()]
    return lines[0], {(cells[0], cells[2]): cells for cells in lines[2:]}


def test_benchmark_answers_on_the_shipped_model_beside_the_oracle_at_its_size(benchmark_script, vlm_server):
    """One scene through the benchmark's own code: reconstruction, the app's clustering, verify mode, the table."""
    model_run = benchmark_script.load_model_run(str(REPOSITORY / "iggt" / "weights" / "iggt-small"), None, "cpu")
    assert model_run.clustering == "small" and model_run.structure  # what the app runs for the shipped model
    benchmark = benchmark_script.Benchmark(
        model_run, ["verify"], lambda model: OpenAIVLM(OpenAIConfig(model=model, base_url=vlm_server.url)),
        benchmark_script.variants("seeing", None, "on"))
    benchmark.add_scene(0)
    header, rows = table_rows(benchmark.markdown_table())
    assert header == ["mode", "questions", "kind", "iggt-small (small)", "oracle at 224 px"]
    assert rows.keys() == {("verify", "all"), ("verify", "find")}
    assert re.fullmatch(r"\d+\.\d%", rows[("verify", "all")][3])
    assert rows[("verify", "all")][4] == "100.0%"  # perfect instances at the model's 224 px
    record, oracle = benchmark_scene(0)
    assert int(rows[("verify", "all")][1]) == sum(q.kind == "find" for q in make_questions(record, oracle))
    visible, matched, _ = benchmark.objects[model_run.oracle_name]
    assert visible == matched == len(record.objects)


@pytest.mark.slow
def test_benchmark_command_prints_both_modes_and_the_markdown_table():
    run = subprocess.run([sys.executable, str(REPOSITORY / "benchmarks" / "grounding.py"), "--scenes", "1",
                          "--checkpoint", str(REPOSITORY / "iggt" / "weights" / "iggt-small")],
                         capture_output=True, text=True, timeout=600, check=True)
    assert "clustering 'small', structure marked" in run.stdout
    header, rows = table_rows(run.stdout[run.stdout.index("| mode |"):])
    assert header[3:] == ["iggt-small (small)", "oracle at 224 px"]
    assert {("verify", "all"), ("agent", "all"), ("agent", "find"), ("agent", "count")} <= rows.keys()
    assert rows[("verify", "all")][4] == rows[("agent", "all")][4] == "100.0%"
