"""What a question asks for: its target phrase, the yes/no check for it, and names that contradict it.

"How many cubes are there?" targets "cubes", checked one instance at a time as "Is the object
outlined in magenta a cube?"; "Where is the yellow cube?" targets "the yellow cube". A name
contradicts a target when it gives another colour ("purple cone" for "the yellow cube") or
another kind of thing ("purple cone" for "cubes"); generic targets ("the red object") only
contradict on colour. Words only: a contradiction is a reason to look again, never a verdict.
"""
from __future__ import annotations

import re

_PREFIX = re.compile(
    r"^(please\s+)?(can you\s+|could you\s+)?("
    r"how many|count( the)?|find|show( me)?|highlight|locate|point (to|at)|select|mark|"
    r"where (is|are)|where's|which (object|one|objects|ones|instance|instances|thing|things) (is|are)|"
    r"which is|what colou?r (is|are)|what is|is there|are there( any)?)\s+", re.IGNORECASE)
_SUFFIX = re.compile(r"\s+(are there|is there|can you see|do you see|are visible|in the scene|in this scene|"
                     r"in the picture|in the pictures|in the views|located)$", re.IGNORECASE)
COLOURS = frozenset({"red", "orange", "yellow", "green", "cyan", "blue", "purple", "violet", "pink", "magenta",
                     "brown", "beige", "black", "white", "gray", "grey", "silver", "gold"})
GENERIC = frozenset({"object", "thing", "one", "item", "instance", "something", "stuff", "anything"})
_ARTICLES = frozenset({"a", "an", "the", "any", "some", "all", "every", "each"})
_CHECK_WORDS = frozenset({"is", "are", "the", "object", "outlined", "in", "magenta", "a", "an", "it", "this",
                          "that", "of", "highlighted"})


def target_phrase(question: str) -> str:
    """The object description inside a query: "Where is the red cube?" -> "the red cube",
    "How many cubes are there?" -> "cubes"."""
    phrase = question.strip().rstrip("?.!").strip()
    phrase = _SUFFIX.sub("", _PREFIX.sub("", phrase)).strip()
    return phrase or question.strip()


_RELATIONAL = re.compile(r"\b(nearest|closest|farthest|furthest|further|farther|left|right|behind|front|above|"
                         r"below|under|over|next to|beside|between|than|or)\b", re.IGNORECASE)


def names_the_answer(target: str) -> bool:
    """Whether a target describes the answered instances themselves ("the red cube"), not their relation
    to others ("nearest to the red cube", "the cube or the cone"): only then can a name contradict it."""
    return not _RELATIONAL.search(target)


def is_count_question(question: str) -> bool:
    return bool(re.match(r"^\s*(please\s+)?(how many|count)\b", question, re.IGNORECASE))


def is_where_question(question: str) -> bool:
    return bool(re.match(r"^\s*(please\s+)?(where\b|where's|locate\b)", question, re.IGNORECASE))


def singular(word: str) -> str:
    lower = word.lower()
    if lower.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if re.search(r"(ches|shes|xes|sses|zes)$", lower):
        return word[:-2]
    if lower.endswith("s") and not lower.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def plural_and_singular(target: str) -> tuple[str, str]:
    """("cubes", "a cube") for a count target; a target with an article stays as it is."""
    words = target.split()
    if not words or words[0].lower() in _ARTICLES:
        return target, target
    one = " ".join([*words[:-1], singular(words[-1])])
    return target, ("an " if one[:1].lower() in "aeiou" else "a ") + one


def check_question(target: str) -> str:
    """The yes/no question asked of each instance for a target phrase."""
    return f"Is the object outlined in magenta {plural_and_singular(target)[1]}?"


def words_of(text: str) -> set[str]:
    """The content words of a description or check, singular, lower case ("the Red cubes" -> {"red", "cube"})."""
    words = {singular(w) for w in re.findall(r"[a-z]+", text.lower())}
    return {"gray" if w == "grey" else w for w in words} - _CHECK_WORDS - _ARTICLES


def _head(text: str) -> str | None:
    words = [singular(w) for w in re.findall(r"[a-z]+", text.lower()) if w not in _ARTICLES]
    return words[-1] if words else None


def contradicts(name: str | None, target: str) -> bool:
    """Whether an instance's name says it is not the target (another colour, another kind of thing)."""
    if not name:
        return False
    named, wanted = words_of(name), words_of(target)
    named_colours, wanted_colours = named & COLOURS, wanted & COLOURS
    if wanted_colours and named_colours and not wanted_colours & named_colours:
        return True
    head = _head(target)
    if head is None or head in GENERIC or head in COLOURS:
        return False
    return head not in named
