"""Spatial tools, the action format, naming, verify and agent modes, and the `ask` command."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grounding.agent import AgentConfig, answer, check_description, parse_action, target_phrase
from grounding.embedders.seeing import SeeingEmbedder
from grounding.evaluation import benchmark_scene, make_questions, run_questions, summarize
from grounding.naming import name_instances, parse_names
from grounding.openvocab import PrefilterConfig
from grounding.spatial import SceneGeometry, SpatialError, relation_holds, sort_instances
from grounding.vlm.base import BaseVLM, VLMAnswer
from grounding.vlm.openai_backend import OpenAIConfig, OpenAIVLM
from grounding.vlm import seeing_server
from grounding.vlm.seeing_server import start_test_server

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    running = start_test_server()
    yield running
    running.stop()


def seeing(server, model="seeing") -> OpenAIVLM:
    return OpenAIVLM(OpenAIConfig(model=model, base_url=server.url, timeout=10.0, max_retries=1))


@pytest.fixture(scope="module")
def generated():
    return benchmark_scene(3)


# -- spatial ------------------------------------------------------------------------------

def hand_geometry() -> SceneGeometry:
    """Camera 0 at the origin looking down +z (OpenCV); camera 1 looks back from z = 10."""
    centroids = np.array([[-1.0, 0.0, 5.0], [1.0, -0.5, 6.0], [0.2, 1.0, 3.0]])
    turned = np.array([[-1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, -1.0, 10.0]])
    extrinsics = np.stack([np.eye(3, 4), turned])
    intrinsics = np.repeat(np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])[None], 2, axis=0)
    return SceneGeometry(centroids, np.array([[1.0, 1, 1], [2, 2, 2], [0.5, 0.5, 0.5]]), extrinsics, intrinsics,
                         up=np.array([0.0, -1.0, 0.0]), names=(None, None, None))


def test_relations_follow_the_chosen_view():
    geometry = hand_geometry()
    assert relation_holds(geometry, 0, "left_of", 1, view=0)[0]
    assert relation_holds(geometry, 0, "right_of", 1, view=1)[0]  # seen from the other side
    assert relation_holds(geometry, 2, "in_front_of", 0, view=0)[0]
    assert relation_holds(geometry, 2, "behind", 0, view=1)[0]
    assert relation_holds(geometry, 1, "above", 0)[0] and relation_holds(geometry, 2, "below", 0)[0]


def test_orders_distances_and_sizes():
    geometry = hand_geometry()
    assert [k for k, _ in sort_instances(geometry, [0, 1, 2], "left_to_right")] == [0, 2, 1]
    assert [k for k, _ in sort_instances(geometry, [0, 1, 2], "nearest_to", reference=0)] == [1, 2]
    assert [k for k, _ in sort_instances(geometry, [0, 1, 2], "nearest_to_camera", view=1)] == [1, 0, 2]
    assert [k for k, _ in sort_instances(geometry, [0, 1, 2], "largest_to_smallest")] == [1, 0, 2]
    assert geometry.distance(0, 1) == pytest.approx(np.sqrt(4 + 0.25 + 1))


def test_up_direction_comes_from_the_cameras(generated):
    record, scene = generated
    geometry = SceneGeometry.from_scene(scene)
    world_up = np.array([0.0, 0.0, 1.0])  # the generator's world is z-up; the scene's world is camera 0
    expected = record.extrinsics[0, :, :3] @ world_up
    assert np.dot(geometry.up, expected) > 0.95


@pytest.mark.parametrize("call, message", [
    (lambda g: relation_holds(g, 0, "beside", 1), "unknown relation"),
    (lambda g: sort_instances(g, [0, 7], "left_to_right"), "unknown instance"),
    (lambda g: sort_instances(g, [0, 1], "nearest_to"), "needs a reference"),
    (lambda g: sort_instances(g, [0, 1], "left_to_right", view=5), "unknown view"),
])
def test_spatial_errors_are_clear(call, message):
    with pytest.raises(SpatialError, match=message):
        call(hand_geometry())


# -- formats ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, problem", [
    ('{"action": "list_instances"}', None),
    ('```json\n{"action": "look", "ids": [1]}\n```', None),
    ('{"action": "sort", "ids": "all", "by": "left_to_right", "view": 1}', None),
    ('Sure! {"action": "list_instances"}', None),
    ('Sure! Here is my next action:\n```json\n{"action": "look", "ids": [2]}\n```\nLet me know the result.', None),
    ('{"action": "look", "ids": [1]} or {"action": "look", "ids": [2]}', "2 different ones"),
    ('I would look at the red one.', "none found"),
    ('{"action": "fly"}', "unknown action"),
    ('{"action": "check", "ids": [1]}', "needs field(s) question"),
    ('{"action": "distance", "a": 1, "b": 2, "c": 3}', "unknown field(s) c"),
    ('[1, 2]', "not a JSON object"),
])
def test_actions_are_parsed_strictly(text, problem):
    action, found = parse_action(text)
    assert found == problem if problem is None else problem in found
    assert (action is None) == (problem is not None)


def test_names_are_parsed_strictly():
    assert parse_names('{"1": "Red  Mug", "2": "chair"}', 2) == ({1: "red mug", 2: "chair"}, None)
    assert parse_names('{"3": "mug"}', 2)[1] == "unknown image number '3'"
    assert parse_names("a mug", 1) == ({}, "not a single JSON object (none found)")
    assert parse_names('Here are the names:\n```json\n{"1": "mug"}\n```', 1) == ({1: "mug"}, None)


def test_target_phrase():
    assert target_phrase("Where is the red cube?") == "the red cube"
    assert target_phrase("Which object is the blue ball") == "the blue ball"
    assert target_phrase("the green cone") == "the green cone"
    assert target_phrase("How many cubes are there?") == "cubes"
    assert target_phrase("Count the red spheres") == "red spheres"


# -- with the seeing server ------------------------------------------------------------------

def test_naming_fills_names_on_a_copy_and_is_cached(server, generated):
    record, scene = generated
    backend = seeing(server)
    named, notes = name_instances(scene, backend, "scene-3")
    assert notes == [] and all(info.name is None for info in scene.instances.info)
    for info in named.instances.info:
        ids = record.instance_ids[scene.instances.labels == info.id]
        truth = record.object(int(ids[0]))
        assert info.name.split()[0] == truth.color_name
    before = len(server.state.requests)
    again, _ = name_instances(scene, backend, "scene-3")
    assert len(server.state.requests) == before
    assert [i.name for i in again.instances.info] == [i.name for i in named.instances.info]


@pytest.mark.parametrize("mode", ["verify", "agent"])
def test_small_question_set(server, mode):
    outcomes = []
    for seed in (3, 7):
        record, scene = benchmark_scene(seed)
        outcomes += run_questions(scene, make_questions(record, scene), seeing(server), mode)
    summary = summarize(outcomes)
    wrong = [(o.question.text, o.reply.text) for o in outcomes if not o.correct]
    assert summary.questions >= (4 if mode == "verify" else 15)
    assert summary.accuracy >= 0.95, wrong


@pytest.mark.slow
def test_large_question_set(server):
    outcomes = []
    for seed in range(10):
        record, scene = benchmark_scene(seed)
        for mode in ("verify", "agent"):
            outcomes += run_questions(scene, make_questions(record, scene), seeing(server), mode)
    summary = summarize(outcomes)
    assert summary.questions >= 40
    assert summary.accuracy >= 0.95, [(o.question.text, o.reply.text) for o in outcomes if not o.correct]


def test_a_planner_that_breaks_the_format_falls_back_to_verify(server, generated):
    record, scene = generated
    question = next(q for q in make_questions(record, scene) if q.kind == "find")
    result = answer(scene, question.text, seeing(server, "bad-planner"), "agent", AgentConfig(max_invalid=3))
    kinds = [step.kind for step in result.trace]
    assert kinds.count("invalid") == 3 and "fallback" in kinds and result.fell_back
    assert set(result.instance_ids) == question.expected_ids


@pytest.mark.parametrize("found, text", [([4], "There is 1 box."), ([4, 7], "There are 2 boxes.")])
def test_the_seeing_planner_answers_a_count_in_plain_english(found, text, monkeypatch):
    """As a real model would write it: the app shows the planner's answer to the person who asked."""
    monkeypatch.setattr(seeing_server, "_find", lambda calls, description: found)
    assert seeing_server.plan("How many boxes are there?", [])["text"] == text


class ScriptedVLM(BaseVLM):
    """Plans from a fixed list of replies (and answers every yes/no with yes)."""

    def __init__(self, replies):
        super().__init__(max_concurrency=2)
        self.replies = list(replies)

    def _ask(self, images, prompt, system, history, **options):
        if system is None:
            return VLMAnswer("Yes")
        return VLMAnswer(self.replies.pop(0) if self.replies else '{"action": "list_instances"}')


def test_invalid_actions_cost_steps_and_are_recorded(generated):
    _, scene = generated
    replies = ['{"action": "look", "ids": [99]}', "not json",
               '{"action": "relation", "a": 0, "relation": "left_of", "b": 1}',
               '{"action": "answer", "ids": [1], "text": "Instance 1."}']
    result = answer(scene, "What is left of instance 1?", ScriptedVLM(replies), "agent",
                    AgentConfig(name_instances=False))
    kinds = [step.kind for step in result.trace]
    assert kinds.count("invalid") == 2 and kinds.count("tool") == 1 and not result.fell_back
    assert "unknown instance id(s) [99]" in result.trace[1].summary
    assert result.instance_ids == [1] and result.text == "Instance 1."


def test_the_step_budget_ends_in_the_fallback(generated):
    _, scene = generated
    result = answer(scene, "Where is the red object?", ScriptedVLM([]), "agent",
                    AgentConfig(max_steps=3, name_instances=False))
    kinds = [step.kind for step in result.trace]
    assert kinds.count("tool") == 3 and "fallback" in kinds
    assert result.instance_ids == list(range(scene.instances.count))  # the scripted VLM says yes to all


def test_ask_command_prints_the_answer_and_writes_highlights(server, generated, tmp_path):
    record, scene = generated
    question = next(q for q in make_questions(record, scene) if q.kind == "find")
    scene_file = scene.save(tmp_path / "scene.npz")
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "iggt", "ask", str(scene_file), question.text, "--backend", "openai",
         "--base-url", server.url, "--model", "seeing", "--mode", "agent", "--out", str(out)],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"})
    assert completed.returncode == 0, completed.stderr
    (expected,) = question.expected_ids
    assert f"instance {expected}" in completed.stdout
    assert (out / f"instance_{expected:03d}.png").is_file() and (out / "overview.png").is_file()
    saved = json.loads((out / "answer.json").read_text())
    assert saved["instance_ids"] == [expected] and saved["trace"]


def test_ask_command_names_a_bad_scene_file(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    completed = subprocess.run([sys.executable, "-m", "iggt", "ask", str(tmp_path / "broken.npz"), "Where?",
                                "--base-url", "http://127.0.0.1:9/v1"],
                               cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2 and "broken.npz" in completed.stderr


# -- answers that agree with themselves -------------------------------------------------------

def named(scene, names: dict[int, str], structure: set[int] = frozenset()):
    """The scene with these instance names (and these instances marked structure)."""
    from dataclasses import replace as with_fields

    from iggt.scene import Instances
    infos = [with_fields(i, name=names.get(i.id, i.name), structure=i.id in structure) for i in scene.instances.info]
    return scene.with_instances(Instances(scene.instances.labels, infos))


class DoubtingVLM(BaseVLM):
    """Says yes to every check of a several-view highlight and no to a single view cropped tighter
    (a re-check): what a VLM does that is fooled by context but not by a sharp look."""

    def __init__(self):
        super().__init__(max_concurrency=2)
        self.questions: list[str] = []

    def _ask(self, images, prompt, system, history, **options):
        self.questions.append(prompt.split("\n")[0])
        square = images and images[0].width == images[0].height  # one tile: the re-check's highlight
        return VLMAnswer("No" if square else "Yes")


def several_view_instances(scene) -> list[int]:
    return [i.id for i in scene.instances.info if len(i.views) >= 2]


def test_verify_checks_the_target_noun_phrase_not_the_whole_question(generated):
    _, scene = generated
    vlm = DoubtingVLM()
    result = answer(scene, "How many cubes are there?", vlm, "verify", AgentConfig(name_instances=False))
    assert set(vlm.questions) >= {"Is the object outlined in magenta a cube?"}
    assert not any("How many" in question for question in vlm.questions)
    assert result.text.startswith("There are ")


def test_an_instance_whose_name_contradicts_the_target_is_checked_again_and_left_out(generated):
    _, scene = generated
    first, second = several_view_instances(scene)[:2]
    scene = named(scene, {first: "purple cone", second: "red cube"})
    result = answer(scene, "How many cubes are there?", DoubtingVLM(), "verify", AgentConfig(name_instances=False))
    assert first not in result.instance_ids and second in result.instance_ids
    (recheck,) = [step for step in result.trace if step.kind == "recheck"]
    assert recheck.detail == {"instance": first, "why": "its name 'purple cone' contradicts 'cubes'",
                              "question": "Is the object outlined in magenta a cube?", "kept": False}
    assert f"#{second} red cube" in result.text and result.instance_names[second] == "red cube"
    kept = answer(scene, "How many cubes are there?", DoubtingVLM(), "verify",
                  AgentConfig(name_instances=False, recheck=False))
    assert first in kept.instance_ids  # without the self-check the contradiction stays in the answer


def test_structure_is_left_out_unless_asked_and_named_as_structure(vlm_server, generated):
    _, scene = generated
    floor = several_view_instances(scene)[0]
    scene = named(scene, {}, structure={floor})
    vlm = seeing(vlm_server)
    before = len(vlm_server.state.requests)
    named_scene, _ = name_instances(scene, vlm, "structure-test")
    assert named_scene.instances.info[floor].name == "structure"
    shown = sum(len([p for p in r["body"]["messages"][-1]["content"] if p["type"] == "image_url"])
                for r in vlm_server.state.requests[before:])
    assert shown == scene.instances.count - 1  # the structure instance was not shown to the VLM
    result = answer(scene, "How many objects are there?", ScriptedVLM([]), "verify", AgentConfig(name_instances=False))
    assert floor not in result.instance_ids and any(step.kind == "scope" for step in result.trace)


@pytest.mark.parametrize("mode", ["verify", "agent"])
def test_a_where_answer_says_where(vlm_server, generated, mode):
    record, scene = generated
    question = next(q for q in make_questions(record, scene) if q.kind == "find")
    result = answer(scene, question.text, seeing(vlm_server), mode)
    (instance,) = question.expected_ids
    assert result.instance_ids == [instance]
    name = result.instance_names[instance]
    assert name and result.text == result.locations[instance]
    assert result.text.startswith(f"The {name} (#{instance}) is in view")
    assert re.search(r"in view \d+ it is (at the|on the|in the) [a-z ]+, (left of|right of|in front of|behind|above|"
                     r"below) the [a-z ]+ \(#\d+\)\.$", result.text), result.text


# -- the pre-filter of the agent's find checks by embedding score ----------------------------------

@pytest.mark.parametrize("question, description", [
    ("Is the object outlined in magenta the yellow cube?", "yellow cube"),
    ("Is the object outlined in magenta a cube?", "cube"),
    ("Are the highlighted objects red spheres", "red spheres"),
    ("Is it something to sit on?", "something to sit on"),
    ("Is the object outlined in magenta on the table?", None),        # where it is, not what it is
    ("Is the object outlined in magenta left of the red cube?", None),
    ("Does it have legs?", None),
])
def test_a_check_that_says_what_the_instance_is_gives_the_description(question, description):
    assert check_description(question) == description


def prefilter_steps(result):
    return [step for step in result.trace if step.kind == "prefilter"]


@pytest.mark.parametrize("kind", ["find", "count"])
def test_the_prefilter_keeps_the_right_instance_and_asks_fewer_questions(server, generated, kind):
    record, scene = generated
    question = next(q for q in make_questions(record, scene) if q.kind == kind)
    plain = answer(scene, question.text, seeing(server), "agent")
    filtered = answer(scene, question.text, seeing(server), "agent", embedder=SeeingEmbedder())
    assert set(plain.instance_ids) == set(filtered.instance_ids) == question.expected_ids
    assert question.is_correct(filtered)
    (step,) = prefilter_steps(filtered)
    assert question.expected_ids <= set(step.detail["asked"]) and step.detail["saved"] > 0
    assert filtered.vlm_calls == plain.vlm_calls - step.detail["saved"]
    tool = next(s for s in filtered.trace if s.kind == "tool" and s.detail["action"]["action"] == "check")
    assert tool.detail["result"]["not_asked"] == step.detail["skipped"]  # the planner is told who was not asked


def test_without_an_embedder_or_switched_off_nothing_changes(server, generated):
    record, scene = generated
    question = next(q for q in make_questions(record, scene) if q.kind == "count")
    plain = answer(scene, question.text, seeing(server), "agent")
    off = answer(scene, question.text, seeing(server), "agent", AgentConfig(prefilter=PrefilterConfig(enabled=False)),
                 embedder=SeeingEmbedder())
    for result in (plain, off):
        assert not prefilter_steps(result) and question.is_correct(result)
        tool = next(s for s in result.trace if s.kind == "tool" and s.detail["action"]["action"] == "check")
        asked = tool.detail["result"]["yes"] + tool.detail["result"]["no"]
        assert sorted(asked) == scene.instances.object_ids and "not_asked" not in tool.detail["result"]
    assert off.vlm_calls == plain.vlm_calls and off.text == plain.text


class FlatEmbedder:
    """Sees every region alike: its scores cannot tell one instance from another."""

    name = "flat-test"
    logit_scale = 25.0

    def embed_regions(self, regions):
        return np.tile(np.array([[0.6, 0.8, 0.0]], np.float32), (len(regions), 1))

    def embed_texts(self, texts):  # "object" on one axis, every other text on another
        return np.eye(3, dtype=np.float32)[[0 if "object" in t else 1 for t in texts]]


def test_flat_scores_keep_every_instance(server, generated):
    record, scene = generated
    question = next(q for q in make_questions(record, scene) if q.kind == "find")
    plain = answer(scene, question.text, seeing(server), "agent")
    flat = answer(scene, question.text, seeing(server), "agent", embedder=FlatEmbedder())
    (step,) = prefilter_steps(flat)
    assert step.detail["why"] == "the embedding scores are flat" and step.detail["saved"] == 0
    assert len(set(step.detail["scores"].values())) == 1
    assert flat.vlm_calls == plain.vlm_calls and flat.instance_ids == plain.instance_ids


def test_ask_command_prefilters_with_an_embedder(server, generated, tmp_path, capsys, monkeypatch):
    from iggt.__main__ import main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    record, scene = generated
    question = next(q for q in make_questions(record, scene) if q.kind == "find")
    path = scene.save(tmp_path / "scene.npz")
    assert main(["ask", str(path), question.text, "--base-url", server.url, "--model", "seeing", "--mode", "agent",
                 "--embedder", "seeing"]) == 0
    out = capsys.readouterr().out
    (expected,) = question.expected_ids
    assert f"instance {expected}" in out and re.search(r"\(\d+ yes/no checks saved by the seeing pre-filter\)", out)
