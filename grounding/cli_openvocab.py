"""``iggt find`` and ``iggt label``: open-vocabulary search and labels for a saved scene, no chat VLM.

    iggt find out/scene.npz "chair"                     # ranked table of the instances
    iggt label out/scene.npz --vocabulary scannet20     # writes the labels back into scene.npz

The embedding model is read from the local Hugging Face cache (default
laion/CLIP-ViT-B-32-laion2B-s34B-b79K); ``--model seeing`` uses the seeing test embedder, which needs no
weights. Instance embeddings are cached on disk per scene content, so a second query of the same
scene costs only the text side.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .embedders import DEFAULT_MODEL


def cache_folder() -> Path:
    """Where instance embeddings are kept between runs (XDG cache)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "iggt" / "openvocab"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", type=Path, help="a scene.npz with instances, or a folder that holds one")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="Hub id or folder of a CLIP-family model, or 'seeing' (test embedder) "
                             "(default: %(default)s)")
    parser.add_argument("--device", default="auto", help="torch device of the embedding model (default: auto)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")


def register(subparsers) -> None:
    find = subparsers.add_parser("find", help="rank the instances of a scene for a text query (no VLM needed)",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(find)
    find.add_argument("query", help='what to find, e.g. "chair" or "something to sit on"')
    find.add_argument("--threshold", type=float, default=None, help="score from which an instance matches (0..1)")
    find.add_argument("--top", type=int, default=10, help="rows of the table (default: %(default)s)")
    find.set_defaults(func=run_find)
    label = subparsers.add_parser("label", help="give every instance a label from a vocabulary (no VLM needed)",
                                  description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(label)
    label.add_argument("--vocabulary", default="scannet20",
                       help="scannet20, scannet200, a file (one name per line, or a JSON list) or "
                            "'name,name,...' (default: %(default)s)")
    label.add_argument("--out", type=Path, default=None, help="write the labelled scene here (default: in place)")
    label.set_defaults(func=run_label)


def _load(args: argparse.Namespace):
    from iggt.scene import Scene

    from .embedders import make_embedder
    from .openvocab import EmbeddingCache

    path = args.scene / "scene.npz" if args.scene.is_dir() else args.scene
    scene = Scene.load(path)
    cache = EmbeddingCache() if args.no_cache else EmbeddingCache(cache_folder())
    return path, scene, make_embedder(args.model, args.device), cache


def run_find(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from iggt.errors import IGGTError

    from .openvocab import OpenVocabConfig, find

    config = OpenVocabConfig()
    if args.threshold is not None:
        if not 0.0 <= args.threshold <= 1.0:
            raise IGGTError("--threshold is a probability: give a value from 0 to 1")
        config = replace(config, threshold=args.threshold)
    _, scene, embedder, cache = _load(args)
    result = find(scene, args.query, embedder, config, cache)
    matches = result.matches
    print(f"{len(matches)} instance(s) match {result.query!r} (score >= {result.threshold:.2f}; {embedder.name})")
    print(result.table(max(1, args.top)))
    return 0


def run_label(args: argparse.Namespace) -> int:
    from .openvocab import label_instances

    path, scene, embedder, cache = _load(args)
    labelled = label_instances(scene, args.vocabulary, embedder, cache=cache)
    out = labelled.save(args.out or path)
    print(f"{'instance':>8}  {'score':>5}  label")
    for info in labelled.instances.info:
        print(f"{info.id:>8}  {info.label_score:5.2f}  {info.label}{'  (structure)' if info.structure else ''}")
    print(f"labelled {labelled.instances.count} instances ({embedder.name}); wrote {out.name}")
    return 0
