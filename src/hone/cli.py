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
    p.add_argument("config", help="YAML config, e.g. examples/pretrain_embedded.yaml")
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


def add_advise(sub) -> None:
    p = sub.add_parser("advise", help="should you fine-tune at all, and how (prompting, few-shot, RAG, fine-tuning)")
    p.add_argument("--answers", metavar="FILE.yaml", help="answers as YAML (keys: the flag names with underscores)")
    p.add_argument("--json", action="store_true", help="print the advice as JSON")
    from hone.plan.commands import advise_flags

    advise_flags(p)
    p.set_defaults(handler=cmd_advise)


def cmd_advise(args) -> int:
    from hone.plan.commands import QUESTIONS, advise_command, is_interactive

    flags = {name: getattr(args, name, None) for name in [*QUESTIONS, "dataset"]}
    return advise_command(args.answers, flags, args.json, interactive=is_interactive())


def add_plan(sub) -> None:
    p = sub.add_parser("plan", help="memory, time and cost of a training run before it starts (reads no weights)")
    p.add_argument("config", help="the YAML config you would pass to `hone train`")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. adapter.method=qlora")
    p.add_argument("--json", action="store_true", help="print every estimate as JSON")
    p.add_argument("--price", action="append", default=[], metavar="GPU=USD",
                   help="price per GPU-hour, e.g. --price A100=1.2 (repeatable)")
    p.add_argument("--hosted-price", type=float, metavar="USD", help="hosted fine-tuning price per 1K training tokens")
    p.set_defaults(handler=cmd_plan)


def cmd_plan(args) -> int:
    from hone.plan.estimate import plan_command

    return plan_command(args.config, args.overrides, args.json, args.price, args.hosted_price)


BUILDERS = [add_train, add_pretrain, add_quickstart, add_advise, add_plan]


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
