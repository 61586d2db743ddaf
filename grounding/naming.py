"""Open-vocabulary names for every instance, asked of a VLM in a few batched requests.

Each request shows up to `NamingConfig.batch_size` instances, one highlight image each, and
asks for one JSON object mapping image numbers to short names. Replies are parsed strictly:
a reply that is not such an object names nothing (the reason goes to the returned notes).
Names are cached in the backend's cache per (scene id, instance id), so the instance list of
an app or an agent costs these calls once per scene. Structure (floor, walls, large planes, as
`iggt.structure` marks it) is not shown to the VLM: it keeps its label ("floor", "wall") or is
named `STRUCTURE_NAME`, since a wall fragment that a VLM calls "gray cube" would read as an object.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from iggt.progress import Progress
from iggt.scene import Instances, Scene

from .highlight import HighlightConfig, highlight_instance
from .vlm.base import VLM
from .vlm.replies import single_json_object

MAX_NAME_LENGTH = 40
STRUCTURE_NAME = "structure"


@dataclass(frozen=True)
class NamingConfig:
    batch_size: int = 8
    highlight: HighlightConfig = HighlightConfig(max_views=1, max_pixels=256 * 256)


def naming_prompt(count: int) -> str:
    return (f"You see {count} image(s). In each one, a single object is outlined in magenta and "
            "everything else is dimmed. Name each outlined object with a short phrase of at most four "
            "words: its colour and what it is. Reply with one JSON object mapping the image number "
            f"(1 to {count}) to the name and nothing else, for example "
            '{"1": "red mug", "2": "wooden chair"}.')


def parse_names(text: str, count: int) -> tuple[dict[int, str], str | None]:
    """Image number (1-based) -> name, and the problem when the reply breaks the format."""
    reply, problem = single_json_object(text)
    if reply is None:
        return {}, problem
    names, problems = {}, []
    for key, value in reply.items():
        if not (key.isdigit() and 1 <= int(key) <= count):
            problems.append(f"unknown image number {key!r}")
        elif not (isinstance(value, str) and 0 < len(value.strip()) <= MAX_NAME_LENGTH):
            problems.append(f"image {key}: not a short name")
        else:
            names[int(key)] = " ".join(value.split()).lower()
    return names, "; ".join(problems) or None


def name_instances(scene: Scene, backend: VLM, scene_key: str, config: NamingConfig = NamingConfig(),
                   progress: Progress | None = None, ids: list[int] | None = None) -> tuple[Scene, list[str]]:
    """A copy of ``scene`` whose instances carry VLM names, and notes on what went wrong.

    ``scene_key`` identifies the scene in the cache (see `grounding.agent.scene_fingerprint`);
    ``ids``: name only these instances (default: all). Names the scene already has are kept.
    """
    if scene.instances is None:
        raise ValueError("the scene has no instances to name: segment it first")
    infos = list(scene.instances.info)
    wanted = set(range(len(infos)) if ids is None else ids)
    names: dict[int, str] = {}
    missing = []
    for info in infos:
        if info.id not in wanted or info.name:
            continue
        if info.structure:  # its label ("floor", "wall") says it already; else it is named as what it is
            if not info.label:
                names[info.id] = STRUCTURE_NAME
            continue
        cached = backend.cache.get(("name", scene_key, info.id))
        if cached is not None:
            names[info.id] = cached
        else:
            missing.append(info.id)
    notes = []
    batches = [missing[i:i + config.batch_size] for i in range(0, len(missing), config.batch_size)]
    for index, batch in enumerate(batches):
        if progress:
            progress(index / len(batches), f"naming instances {batch[0]}-{batch[-1]}")
        images = [highlight_instance(scene, k, config.highlight).image for k in batch]
        reply = backend.ask(images, naming_prompt(len(batch)))
        if reply.error is not None:
            notes.append(f"naming {batch}: {reply.error}")
            continue
        parsed, problem = parse_names(reply.text, len(batch))
        if problem:
            notes.append(f"naming {batch}: {problem} (reply: {reply.text[:200]!r})")
        for number, name in parsed.items():
            names[batch[number - 1]] = name
            backend.cache.put(("name", scene_key, batch[number - 1]), name)
    named = [replace(info, name=info.name or names.get(info.id)) for info in infos]
    return scene.with_instances(Instances(scene.instances.labels, named)), notes
