"""``python -m iggt <command>``: one entry point for every command of the project.

Each command lives in its own module, which exposes ``register(subparsers)`` (adds its
subparser and sets ``func``) and imports its heavy dependencies only when it runs.

Exit codes: 0 done; 2 the user's input or settings (`IGGTError`, or a path that does not exist),
shown as one line; 1 anything else, a fault of the software, logged with its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from iggt.batch import leave_processes
from iggt.errors import IGGTError

COMMAND_MODULES = (
    "iggt.cli_reconstruct",   # reconstruct
    "iggt.cli_view",          # view
    "iggt.cli_track",         # track
    "iggt.training.cli",      # train, generate
    "iggt.evaluation.cli",    # evaluate
    "grounding.cli",          # ask
    "grounding.cli_openvocab",  # find, label
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m iggt" if Path(sys.argv[0]).name == "__main__.py" else "iggt",  # the console script
        description="IGGT: reconstruct scenes with multi-view consistent instances, train, evaluate, ask, find, label.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; what the user can fix is one line, a defect of ours also leaves its traceback."""
    args = build_parser().parse_args(argv)
    finished = False
    try:
        code = int(args.func(args) or 0)
        finished = True
        return code
    except (IGGTError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception:
        logging.getLogger("iggt").exception("`%s` failed", args.command)
        print("error: this is a fault of the software, not of your input: please report it with the traceback above",
              file=sys.stderr)
        return 1
    finally:
        leave_processes(together=finished)


if __name__ == "__main__":
    sys.exit(main())
