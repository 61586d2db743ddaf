"""The OpenAI-compatible backend against the local seeing server, over real HTTP."""
import logging

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from grounding.agent import answer
from grounding.evaluation import benchmark_scene
from grounding.highlight import CONTOUR_COLOR, highlight_instance
from grounding.vlm import make_backend
from grounding.vlm.base import parse_yes_no, yes_probability
from grounding.vlm.openai_backend import OpenAIConfig, OpenAIVLM
from grounding.vlm.seeing_server import outlined_objects, see, start_test_server

SECRET = "sk-test-0123456789-do-not-leak"


@pytest.fixture(scope="module")
def server():
    running = start_test_server()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def generated():
    return benchmark_scene(3)


@pytest.fixture(scope="module")
def scene(generated):
    return generated[1]


def backend(server, model="seeing", **overrides) -> OpenAIVLM:
    settings = dict(model=model, base_url=server.url, api_key=SECRET, timeout=5.0, max_retries=2)
    settings.update(overrides)
    return OpenAIVLM(OpenAIConfig(**settings))


def colour_of(generated, instance_id):
    """The true colour name of an instance, from the generator's record."""
    record, scene = generated
    ids = record.instance_ids[scene.instances.labels == instance_id]
    return record.object(int(ids[0])).color_name


@pytest.mark.parametrize("text, expected", [
    ("Yes", True), ("no.", False), (" Yes, it is red.", True), ("NO", False),
    ("Maybe", None), ("yes or no", None), ("Yes... no", None), ("", None), ("I think yes", None),
])
def test_strict_yes_no_parsing(text, expected):
    assert parse_yes_no(text) is expected


def test_yes_probability_from_logprobs():
    assert yes_probability({"Yes": -0.1, " no": -2.4}) == pytest.approx(0.9 / (0.9 + 0.0907), abs=1e-3)
    assert yes_probability({"The": -0.1}) is None


def test_yes_no_follows_what_the_highlight_shows(server, generated):
    scene = generated[1]
    vlm = backend(server)
    for instance in scene.instances.info[:3]:
        image = highlight_instance(scene, instance.id).image
        colour = colour_of(generated, instance.id)
        other = "green" if colour != "green" else "red"
        right = vlm.yes_no([image], f"Is the object outlined in magenta {colour}?")
        wrong = vlm.yes_no([image], f"Is the object outlined in magenta {other}?")
        assert (right.answer, right.probability) == (True, 1.0)
        assert (wrong.answer, wrong.probability) == (False, 0.0)


def test_a_speck_of_outline_beside_the_object_is_not_what_is_seen(generated):
    """Clustering leaves specks: a few floor pixels of the instance get their own small outline in a
    tile. A person names the outlined object, so the server sees each tile's largest region."""
    scene = generated[1]
    instance = scene.instances.info[1]
    array = np.array(highlight_instance(scene, instance.id).image)
    tiles, count = ndimage.label(np.any(array != 0, axis=-1))
    for box in ndimage.find_objects(tiles):
        top, left = box[0].start + 5, box[1].start + 5
        array[top:top + 11, left:left + 11] = CONTOUR_COLOR
        array[top + 2:top + 9, left + 2:left + 9] = 128  # a grey speck of floor, fully outlined
    image = Image.fromarray(array)

    regions = outlined_objects(image)
    assert len(regions) == count and all(mask.sum() > 49 for mask, _, _ in regions)
    assert see(image).color == colour_of(generated, instance.id)


def outlined_tiles(top: int, bottom: int, left: int, right: int) -> Image.Image:
    """Two grey 100 x 100 tiles on the black canvas, each with the same red region outlined."""
    array = np.zeros((100, 210, 3), np.uint8)
    for offset in (0, 110):
        array[:, offset:offset + 100] = 128
        array[top:bottom, offset + left:offset + right] = (220, 30, 30)
        ring = np.zeros((100, 100), bool)
        ring[top:bottom, left:right] = True
        ring[top + 1:bottom - 1, left + 1:right - 1] = False
        array[:, offset:offset + 100][ring] = CONTOUR_COLOR
    return Image.fromarray(array)


def test_an_object_never_seen_whole_has_no_shape_the_server_can_tell():
    """A region cut by the border in every tile (a table top, a wall) is a red "object", not a red cube."""
    assert (see(outlined_tiles(30, 62, 30, 62)).color, see(outlined_tiles(30, 62, 30, 62)).shape) == ("red", "cube")
    cut = see(outlined_tiles(0, 40, 0, 100))
    assert (cut.color, cut.shape) == ("red", "object")


def test_probability_from_logprobs_when_the_server_returns_them(server, generated):
    scene = generated[1]
    vlm = backend(server, model="seeing-logprobs")
    image = highlight_instance(scene, 0).image
    reply = vlm.yes_no([image], f"Is the object outlined in magenta {colour_of(generated, 0)}?")
    assert reply.answer is True and reply.probability == pytest.approx(0.9)
    assert server.state.requests[-1]["body"]["logprobs"] is True


def test_servers_without_logprobs_still_answer(server, generated):
    scene = generated[1]
    vlm = backend(server, model="reject-logprobs")
    question = f"Is the object outlined in magenta {colour_of(generated, 0)}?"
    first = vlm.yes_no([highlight_instance(scene, 0).image], question)
    assert (first.answer, first.probability, first.error) == (True, 1.0, None)
    vlm.yes_no([highlight_instance(scene, 1).image], question)
    assert "logprobs" not in server.state.requests[-1]["body"]  # learnt not to ask again


@pytest.mark.parametrize("status", [429, 500])
def test_retries_recover_from_rate_limits_and_server_errors(server, scene, status):
    model = f"fail-{status}-2"
    before = len(server.state.requests)
    vlm = backend(server, model=model, max_retries=2)
    reply = vlm.yes_no([highlight_instance(scene, 0).image], "Is the object outlined in magenta red?")
    assert reply.error is None and reply.answer is not None
    assert len(server.state.requests) - before == 3


def test_errors_after_the_last_retry_leave_it_unanswered(server, scene):
    vlm = backend(server, model="fail-500-5", max_retries=1)
    reply = vlm.yes_no([highlight_instance(scene, 0).image], "Is it red?")
    assert reply.answer is None and reply.probability is None
    assert reply.error.startswith("HTTP 500 after 1 retries")


def test_timeout_is_unanswered_with_a_clear_trace_entry(server, scene):
    vlm = backend(server, model="slow-2", timeout=0.3, max_retries=0)
    result = answer(scene, "Where is the red object?", vlm, "verify")
    assert result.instance_ids == []
    errors = [step for step in result.trace if step.kind == "error"]
    assert len(errors) == scene.instances.count
    assert all("timeout: no answer within 0.3 s" in step.summary for step in errors)


def test_nonsense_is_unanswered_and_the_raw_text_kept(server, scene):
    vlm = backend(server, model="nonsense")
    reply = vlm.yes_no([highlight_instance(scene, 0).image], "Is it red?")
    assert reply.answer is None and reply.error == "not a clear yes or no"
    assert reply.raw_text.startswith("The quick brown fox")


@pytest.mark.parametrize("mode", ["verify", "agent"])
def test_an_answer_from_unclear_verdicts_says_so_first(server, scene, mode):
    """A VLM that answers every check with neither yes nor no did not say no: the answer says so
    instead of "No instance matches"."""
    result = answer(scene, "Where is the red object?", backend(server, model="nonsense"), mode)
    assert result.text.startswith("The VLM gave no clear yes or no to any of its ")
    assert "The quick brown fox" in result.text and result.instance_ids == []
    assert "No instance matches" not in result.text


def test_answers_are_cached_per_scene_instance_and_question(server, scene):
    vlm = backend(server)
    image = highlight_instance(scene, 0).image
    before = len(server.state.requests)
    first = vlm.yes_no([image], "Is it red?", cache_key=("scene", 0, "Is it red?"))
    second = vlm.yes_no([image], "Is it red?", cache_key=("scene", 0, "Is it red?"))
    assert len(server.state.requests) - before == 1
    assert (second.answer, second.cached, first.cached) == (first.answer, True, False)


def test_api_key_never_leaks(server, scene, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    vlm = backend(server, model="fail-500-9", max_retries=0)
    assert SECRET not in repr(vlm) and SECRET not in repr(vlm.config)
    result = answer(scene, "Where is the red object?", vlm, "agent")
    assert server.state.requests[-1]["headers"]["authorization"] == f"Bearer {SECRET}"  # it was sent...
    text = repr(result) + str(result.to_json()) + caplog.text
    assert SECRET not in text  # ...and is nowhere else
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    from_env = make_backend("openai", "seeing", base_url=server.url)
    assert SECRET not in repr(from_env)
    assert from_env.yes_no([highlight_instance(scene, 0).image], "Is it red?").error is None
    assert server.state.requests[-1]["headers"]["authorization"] == f"Bearer {SECRET}"


def test_missing_key_for_the_openai_service_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIVLM(OpenAIConfig())
