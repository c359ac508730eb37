"""The `hone` command: parses arguments and dispatches to the stage that does the work."""

from __future__ import annotations

import argparse
import sys

from hone import __version__
from hone.errors import HoneError


def add_train(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a model (full, LoRA or QLoRA) on chat or prompt/completion data")
    p.add_argument("config", nargs="?", help="YAML config (see examples/); omit with --resume RUN_DIR")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.learning_rate=1e-4")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue from the last checkpoint (of RUN_DIR, or of the config's train.output_dir)")
    p.set_defaults(handler=cmd_train)


def cmd_train(args) -> int:
    from hone.train.commands import train_command

    return train_command(args.config, args.overrides, args.resume)


def add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="pre-train or continue pre-training on plain text (rebuilds the embedded model)")
    p.add_argument("config", nargs="?", help="YAML config, e.g. examples/pretrain_embedded.yaml")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of train.output_dir")
    p.set_defaults(handler=cmd_pretrain)


def cmd_pretrain(args) -> int:
    from hone.train.pretrain import pretrain_command

    return pretrain_command(args.config, args.overrides, args.resume)


def add_quickstart(sub) -> None:
    p = sub.add_parser("quickstart", help="the whole path on the embedded model and demo task, in a few minutes")
    p.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    p.set_defaults(handler=cmd_quickstart)


def cmd_quickstart(args) -> int:
    from hone.quickstart import quickstart

    return quickstart(args.out)


BUILDERS = [add_train, add_pretrain, add_quickstart]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hone", description="Fine-tune, evaluate and ship language models.")
    parser.add_argument("--version", action="version", version=f"hone {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for builder in BUILDERS:
        builder(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from hone.quiet import quiet_libraries

    quiet_libraries()
    try:
        return args.handler(args) or 0
    except HoneError as exc:
        print(f"hone: error: {exc.line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hone: interrupted", file=sys.stderr)
        return 130
