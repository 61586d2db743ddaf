"""The quirk matrix: the OpenAI-compatible backend against servers that answer as real models do.

The seeing test server answers in the styles of `seeing_server.STYLES` (a reasoning block, a
reasoning field, a sentence, prose around JSON, bold, tool calls, constrained output, replies
cut off at the token limit) and with the bad replies of `seeing_server.FAULTS`; the real
`openai` client talks to it over HTTP. Every style must be understood, every fault must leave
the question unanswered with the reason, and nothing may crash or log the key.
"""
import logging

import pytest

from grounding.agent import answer
from grounding.evaluation import benchmark_scene, make_questions
from grounding.highlight import highlight_instance
from grounding.vlm.openai_backend import OpenAIConfig, OpenAIVLM
from grounding.vlm.seeing_server import FAULTS

SECRET = "sk-styles-0123456789-do-not-leak"
ANSWER_STYLES = ("think", "reasoning-field", "sentence", "prose", "bold", "tools", "cutoff", "json-schema",
                 "guided-choice", "sentence+logprobs")


@pytest.fixture(scope="module")
def server(vlm_server):
    return vlm_server


@pytest.fixture(scope="module")
def generated():
    """Scene 3 (the scene of the other VLM tests) and its record."""
    return benchmark_scene(3)


def backend(server, model, **overrides) -> OpenAIVLM:
    settings = dict(model=model, base_url=server.url, api_key=SECRET, timeout=60.0, max_retries=0)
    return OpenAIVLM(OpenAIConfig(**{**settings, **overrides}))


def requests_since(server, start: int) -> list[dict]:
    return [request["body"] for request in server.state.requests[start:]]


def colour_of(generated, instance_id: int) -> str:
    record, scene = generated
    return record.object(int(record.instance_ids[scene.instances.labels == instance_id][0])).color_name


@pytest.mark.parametrize("style", ANSWER_STYLES)
def test_every_style_gets_its_yes_and_no_understood(server, generated, style):
    _, scene = generated
    vlm = backend(server, f"seeing+{style}")
    image = highlight_instance(scene, 0).image
    colour = colour_of(generated, 0)
    right = vlm.yes_no([image], f"Is the object outlined in magenta {colour}?")
    wrong = vlm.yes_no([image], f"Is the object outlined in magenta {'green' if colour != 'green' else 'red'}?")
    assert (right.answer, wrong.answer) == (True, False), (right, wrong)
    if style in ("think", "reasoning-field", "cutoff"):  # kept for the trace, never read as the answer
        assert "Should I say yes or no?" in right.reasoning and "yes or no" not in right.raw_text
    if style == "sentence+logprobs":  # P(yes) from the verdict token inside the sentence
        assert right.probability == pytest.approx(0.9) and wrong.probability == pytest.approx(0.1)


@pytest.mark.parametrize("style", ["think", "prose", "tools", "sentence"])
def test_every_style_answers_agent_questions(server, generated, style):
    record, scene = generated
    questions = [q for q in make_questions(record, scene) if q.kind in ("find", "count", "side")][:3]
    vlm = backend(server, f"seeing+{style}")
    for question in questions:
        result = answer(scene, question.text, vlm, "agent")
        assert question.is_correct(result) and not result.fell_back, (question.text, result.text)


def test_tool_calls_travel_as_the_openai_api_has_them(server, generated):
    record, scene = generated
    question = next(q for q in make_questions(record, scene) if q.kind == "find")
    start = len(server.state.requests)
    result = answer(scene, question.text, backend(server, "seeing+tools"), "agent")
    assert question.is_correct(result)
    planning = [body for body in requests_since(server, start) if body.get("tools")]
    assert {tool["function"]["name"] for tool in planning[0]["tools"]} >= {"check", "answer", "look"}
    follow_up = planning[-1]["messages"]
    calls = [m for m in follow_up if m["role"] == "assistant" and m.get("tool_calls")]
    results = [m for m in follow_up if m["role"] == "tool"]
    assert calls and [m["tool_call_id"] for m in results] == [m["tool_calls"][0]["id"] for m in calls]
    assert any(step.kind == "plan" and step.detail["tool_call"] for step in result.trace)


def test_a_server_that_refuses_tools_gets_the_json_protocol(server, generated):
    record, scene = generated
    question = next(q for q in make_questions(record, scene) if q.kind == "find")
    start = len(server.state.requests)
    result = answer(scene, question.text, backend(server, "seeing+strict"), "agent")
    assert question.is_correct(result) and not result.fell_back
    bodies = requests_since(server, start)
    assert sum(bool(body.get("tools")) for body in bodies) == 1  # refused once, never offered again


def test_constrained_output_is_asked_for_and_detected_once_per_server(server, generated):
    _, scene = generated
    image = highlight_instance(scene, 1).image
    colour = colour_of(generated, 1)

    def ask_three(model):
        vlm, start = backend(server, model), len(server.state.requests)
        answers = [vlm.yes_no([image], f"Is the object outlined in magenta {c}?") for c in (colour, "pink", colour)]
        assert [a.answer for a in answers] == [True, False, True]
        return requests_since(server, start)

    schema = ask_three("seeing+json-schema")
    assert all(body["response_format"]["json_schema"]["schema"]["properties"]["answer"]["enum"] == ["yes", "no"]
               for body in schema)
    guided = ask_three("seeing+guided-choice+strict")  # refuses response_format, honours guided_choice
    assert "response_format" in guided[0] and all("response_format" not in body for body in guided[2:])
    assert all(body["guided_choice"] == ["yes", "no"] for body in guided[1:])
    ignoring = ask_three("seeing+sentence")  # takes both fields and ignores them: asked once each, then not
    assert sum("response_format" in body for body in ignoring) == 1
    assert sum("guided_choice" in body for body in ignoring) == 1


def test_a_reasoning_model_needs_room_to_finish(server, generated):
    _, scene = generated
    image = highlight_instance(scene, 0).image
    question = f"Is the object outlined in magenta {colour_of(generated, 0)}?"
    short = backend(server, "seeing+cutoff", max_tokens=256).yes_no([image], question)
    assert short.answer is None and "cut off at the token limit" in short.error
    assert backend(server, "seeing+cutoff").yes_no([image], question).answer is True  # the default limit
    result = answer(scene, "Where is the red object?", backend(server, "seeing+cutoff", max_tokens=256), "agent")
    assert any("cut off at the token limit" in step.summary for step in result.trace)


@pytest.mark.parametrize("fault", FAULTS)
def test_bad_replies_leave_questions_unanswered_with_the_reason(server, generated, fault, caplog):
    caplog.set_level(logging.DEBUG)
    _, scene = generated
    vlm = backend(server, f"seeing+{fault}")
    reply = vlm.yes_no([highlight_instance(scene, 0).image], "Is the object outlined in magenta red?")
    assert reply.answer is None and reply.error
    result = answer(scene, "How many red objects are there?", vlm, "agent")
    assert result.instance_ids == [] or fault == "foreign"  # French yes/no is not understood; plans are JSON
    reasons = " ".join(step.summary for step in result.trace if step.kind in ("error", "invalid"))
    assert reasons, f"{fault}: the trace must say why"
    expected = {"empty-choices": "no choices", "html": "HTML page", "huge": "too long", "bad-utf8": "not valid JSON",
                "foreign": "not a clear yes or no"}[fault]
    assert expected in reply.error + reasons
    assert SECRET not in caplog.text + str(result.to_json())
