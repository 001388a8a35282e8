"""The `fer-dist` command: one subcommand per pipeline step, each a thin call into its package.

Each pipeline package (data, train, launch, report) has a `commands.py` whose `register()` adds
its subcommands; a subcommand's handler takes the parsed arguments and returns an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from rich.text import Text

from fer_dist import __version__
from fer_dist.console import err_console
from fer_dist.errors import UserError

COMMAND_MODULES = (
    "fer_dist.data.commands",      # synth, build-shards, verify-shards
    "fer_dist.train.commands",     # train
    "fer_dist.launch.commands",    # submit
    "fer_dist.report.commands",    # report, sharpness
)

DESCRIPTION = """\
Train ResNet-18 facial-emotion classifiers on paired visible/infrared face images, as a
distributed job (torchrun DDP, Slurm through submitit).

pipeline:  synth -> build-shards -> verify-shards -> train / submit -> report
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fer-dist", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fer-dist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, dispatch, and turn a UserError into one line on stderr and a non-zero exit."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        err_console.print(Text.assemble(("error: ", "bold red"), str(err)), soft_wrap=True)
        return err.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
