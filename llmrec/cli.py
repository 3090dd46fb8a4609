"""`llmrec <group> <command>`: each command is a thin wrapper over a library function.

Subcommand groups live beside the code they drive (``llmrec/<pkg>/commands.py``, each with
``register(subparsers)``); this module only wires them up and turns errors into exit code 2: an llmrec error
(bad input, named file/record/field) is printed as one line; any other exception is a bug or an unforeseen
input, printed as one line naming its type plus a hint, with the traceback only under ``-v``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from llmrec.errors import LlmrecError
from llmrec.hardware import configure_openmp
from llmrec.io import dumps_json
from llmrec.package_data import PROMPTS_ENV

# Modules that contribute subcommand groups; each has register(subparsers).
COMMAND_MODULES = (
    "llmrec.commands_core",
    "llmrec.items.commands",
    "llmrec.evaluation.commands",
    "llmrec.lm.commands",
    "llmrec.recipes.commands",
)


def print_json(obj: Any) -> None:
    print(dumps_json(obj, indent=None, default=str))  # NaN/inf -> null: always valid JSON


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmrec", description="LLM personalization toolkit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--prompts-dir", action="append", default=[], metavar="DIR",
                        help=f"your prompt templates; one here overrides the built-in of the same name (or ${PROMPTS_ENV})")
    sub = parser.add_subparsers(dest="group", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # group not built yet in this checkout
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    configure_openmp()  # before any torch import: passive OpenMP waits on a busy machine (busy_machine.json)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.prompts_dir:  # searched before $LLMREC_PROMPTS and the built-in prompts (llmrec.package_data)
        os.environ[PROMPTS_ENV] = os.pathsep.join([*args.prompts_dir, os.environ.get(PROMPTS_ENV, "")]).strip(os.pathsep)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except LlmrecError as exc:
        print(f"llmrec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI-wide guard: never end in a bare traceback
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else " (run with -v for the traceback)"
        print(f"llmrec: error: {_one_line(exc)}{hint}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (long messages cut), for the guard."""
    text = " ".join(str(exc).split()) or "(no message)"
    if len(text) > 500:
        text = text[:500] + "..."
    return f"{type(exc).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
