"""`partsearch <command>`: the command-line entry point.

Each command lives in `partsearch.commands.<name>` with two functions, `add_arguments(parser)`
and `run(args) -> int`; heavy imports happen inside `run`, so `partsearch --help` is quick.
Errors a user can cause (`partsearch.errors.UserError`) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import shutil
import sys
from pathlib import Path

from partsearch import __version__
from partsearch.errors import UserError, user_message
from partsearch.extras import missing_extra

COMMANDS = {
    "synth": ("synth", "generate a SynthPEDES dataset in CUHK-PEDES layout"),
    "data-stats": ("data_stats", "ids / images / captions per split of a dataset, as read"),
    "train": ("train", "train a model from a config file"),
    "eval": ("evaluate", "evaluate a run directory (R@1/5/10, mAP, mINP)"),
    "parts": ("parts", "part diagnostics of a run: token diversity, correspondence, attribute localisation"),
    "ingest": ("ingest", "cut the people out of videos: detect, track, write crops and their records"),
    "index": ("index", "embed a folder of pedestrian crops into a search index"),
    "search": ("search", "search an index with a sentence"),
    "case": ("case", "a person's sightings across cameras, cases of them, and their export"),
    "serve": ("serve", "serve an index over HTTP with a web page"),
    "demo": ("demo", "the whole job on synthetic data: generate, train, evaluate, index, search, report"),
}


def invocation() -> str:
    """How to type this installation's `partsearch` in the user's shell, for printed commands that
    work as shown: the bare name when it is on PATH, otherwise the path of the script next to this
    Python (e.g. `.venv/bin/partsearch` after `make demo`, whose venv is not activated), otherwise
    `python -m partsearch`."""
    script = Path(sys.executable).parent / "partsearch"
    found = shutil.which("partsearch")
    if found and script.is_file() and Path(found).resolve() == script.resolve():
        return "partsearch"
    if script.is_file():
        with contextlib.suppress(ValueError):
            return str(script.absolute().relative_to(Path.cwd()))
        return str(script.absolute())
    return f"{sys.executable} -m partsearch"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to each option's help, except where there is nothing to show (no
    value, a flag that is off) or the text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default in ([], "") \
                or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="partsearch",
        description="Text-based person search with part-level cross-modal correspondence.",
    )
    parser.add_argument("--version", action="version", version=f"partsearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"partsearch.commands.{module}")
        cmd = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)
        mod.add_arguments(cmd)
        cmd.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"error: {user_message(err)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        extra = missing_extra(err)
        if extra is None:
            raise
        print(f"error: {extra}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
