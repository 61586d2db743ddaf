"""Reading VLM replies: reasoning apart from the answer, yes/no from what models say, one JSON object."""
import pytest

from grounding.vlm.base import VLMAnswer, verdict_token_logprobs, with_reasoning_split, yes_no_from_answer
from grounding.vlm.replies import MAX_ANSWER_CHARS, parse_verdict, reasoning_end, single_json_object, split_reasoning


@pytest.mark.parametrize("text, expected", [
    # phrasings of GPT-4o, Qwen2.5-VL, Qwen3-VL, LLaVA, Gemma and InternVL seen answering yes/no questions
    ("Yes", True), ("no.", False), ("Yes.", True), ("NO", False), (" Yes, it is red.", True),
    ("Yes, it is.", True), ("No - that is a cone.", False), ("No, that is a cone.", False),
    ("**No**", False), ("**Yes**, the outlined object is a red cube.", True), ("Answer: yes", True),
    ("Final answer: **No**", False), ("The answer is yes.", True),
    ("Looking at the highlighted object, the answer is yes.", True),
    ("The outlined object is a blue sphere, so no.", False),
    ("The object outlined in magenta is a small red cube.\n\nYes.", True),
    ("Is the object outlined in magenta red? Yes.", True),  # the question repeated, then answered
    ("Yes, the outlined object appears to be a red cube.", True),
    ("`yes`", True), ("No it isn't.", False),
])
def test_a_clear_verdict_counts_wherever_the_sentence_puts_it(text, expected):
    assert parse_verdict(text) == (expected, None)


@pytest.mark.parametrize("text, why", [
    ("Maybe", "not a clear yes or no"), ("yes or no", "both"), ("Yes... no", "both"),
    ("Yes. Wait, no - it is purple.", "both"), ("", "empty"), ("I think yes", "hedged"),
    ("Probably yes.", "hedged"), ("It might be red, yes.", "hedged"), ("I'm not sure, yes?", "question back"),
    ("Do you mean the red cube or the red sphere?", "question back"), ("There is no cube here.", "not a clear"),
    ("The answer is not yes.", "not a clear"), ("Oui, c'est un cube rouge.", "not a clear"),
    ("<html><body>Yes</body></html>", "not a clear"), ("Nobody knows.", "not a clear"),
    ("yes " * MAX_ANSWER_CHARS, "too long"),
])
def test_contradictions_hedges_questions_and_rambles_do_not(text, why):
    answer, problem = parse_verdict(text)
    assert answer is None and why in problem


@pytest.mark.parametrize("text, answer, reasoning", [
    ("<think>Is it yes or no? The tile shows blue.</think>\n\nNo.", "No.", "Is it yes or no? The tile shows blue."),
    ("<thinking>red, so yes</thinking>Yes", "Yes", "red, so yes"),
    ("<REASONING>a</REASONING> Yes <think>b</think>", "Yes", "a\n\nb"),
    ("The tile shows red.</think>\n\nYes", "Yes", "The tile shows red."),  # Qwen3: <think> is in the prompt
    ("<think>Let me look at every tile once more", "", "Let me look at every tile once more"),  # cut off
    ("Yes", "Yes", None),
])
def test_reasoning_is_split_from_the_answer(text, answer, reasoning):
    assert split_reasoning(text) == (answer, reasoning)


def test_reasoning_is_never_the_answer_and_a_field_joins_it():
    reply = with_reasoning_split(VLMAnswer("<think>It could be yes.</think>No", reasoning="From the field."))
    assert (reply.text, reply.reasoning) == ("No", "From the field.\n\nIt could be yes.")
    assert yes_no_from_answer(reply).answer is False
    only_reasoning = with_reasoning_split(VLMAnswer("<think>yes yes yes</think>"))
    assert yes_no_from_answer(only_reasoning).error == "the reply holds reasoning but no answer"


def test_a_reply_cut_off_at_the_token_limit_says_so():
    reply = with_reasoning_split(VLMAnswer("<think>Let me look at every tile", finish_reason="length"))
    assert reply.cut_off
    answer = yes_no_from_answer(reply)
    assert answer.answer is None and "cut off at the token limit" in answer.error and "max_tokens" in answer.error


def test_probability_comes_from_the_verdict_token_after_the_reasoning():
    tokens = [("<think>", {}), ("no", {"no": -0.01}), ("</think>", {}), ("The", {}), (" answer", {}), (" is", {}),
              (" yes", {" yes": -0.2, " no": -1.8})]
    text = "".join(token for token, _ in tokens)
    assert verdict_token_logprobs(tokens, reasoning_end(text)) == {" yes": -0.2, " no": -1.8}
    answer = yes_no_from_answer(VLMAnswer("The answer is yes", verdict_logprobs={" yes": -0.2, " no": -1.8}))
    assert answer.answer is True and answer.probability == pytest.approx(0.832, abs=1e-3)
    disagreeing = yes_no_from_answer(VLMAnswer("Yes", verdict_logprobs={"No": -0.1, "Yes": -2.5}))
    assert disagreeing.probability == 1.0  # the words decide; probabilities that contradict them are not used


@pytest.mark.parametrize("text, expected, problem", [
    ('{"action": "list_instances"}', {"action": "list_instances"}, None),
    ('Sure! Here is my next action: {"action": "look", "ids": [1]} Let me know the result.',
     {"action": "look", "ids": [1]}, None),
    ('```json\n{"1": "red mug"}\n```', {"1": "red mug"}, None),
    ('{"a": 1}\nTo repeat: {"a": 1}', {"a": 1}, None),
    ('{"a": 1} or {"b": 2}', None, "2 different ones"),
    ("[1, 2]", None, "not a JSON object"),
    ("I would look at the red one.", None, "none found"),
    ('{"a": "' + "x" * 30000 + '"}', None, "too long"),
])
def test_the_single_json_object_of_a_reply(text, expected, problem):
    found, why = single_json_object(text)
    assert found == expected and (why == problem if problem is None else problem in why)
