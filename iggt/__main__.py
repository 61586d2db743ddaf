"""``python -m iggt <command>``: one entry point for every command of the project.

Each command lives in its own module, which exposes ``register(subparsers)`` (adds its
subparser and sets ``func``) and imports its heavy dependencies only when it runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "iggt.cli_reconstruct",   # reconstruct
    "iggt.training.cli",      # train, generate
    "iggt.evaluation.cli",    # evaluate
    "grounding.cli",          # ask
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m iggt",
        description="IGGT: reconstruct scenes with multi-view consistent instances, train, evaluate, ask.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a bad input or setting ends with one readable line and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
