"""The `hone` command: parses arguments and dispatches to the stage that does the work."""

from __future__ import annotations

import argparse
import os
import sys

from hone import __version__
from hone.errors import HoneError


def add_train(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a model (full, LoRA or QLoRA) on chat or prompt/completion data")
    p.add_argument("config", nargs="?", help="YAML config (see examples/); omit with --resume RUN_DIR")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.learning_rate=1e-4")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue from the last checkpoint (of RUN_DIR, or of the config's train.output_dir)")
    p.add_argument("--force", action="store_true", help="train even when the data checks find errors")
    p.set_defaults(handler=cmd_train)


def cmd_train(args) -> int:
    from hone.pipeline import train_command

    return train_command(args.config, args.overrides, args.resume, args.force)


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


def add_check(sub) -> None:
    p = sub.add_parser("check", help="find every defect in a data file before training (the data doctor)")
    p.add_argument("data", help="training data: .jsonl/.json/.csv/.parquet/.txt, optionally .gz")
    p.add_argument("--eval", dest="eval_path", metavar="EVAL", help="eval file: also checked for leakage from the training data")
    p.add_argument("--model", help="model folder or hub id whose tokenizer the token checks use (default: the embedded model)")
    p.add_argument("--max-length", type=int, metavar="N", help="longest example in tokens (default: data.max_length, 512)")
    p.add_argument("--overlength", choices=["drop", "truncate"], default="drop", help="the policy whose losses are reported")
    p.add_argument("--json", dest="json_path", metavar="REPORT", help="also write the machine-readable report here")
    p.add_argument("--fix", metavar="OUT", help="write the clean rows to OUT and every removed row to OUT's .rejected.jsonl")
    p.add_argument("--show", type=int, default=0, metavar="N", help="print N examples with the trained tokens highlighted")
    p.add_argument("--near-dup-threshold", type=float, default=0.8, metavar="J",
                   help="estimated Jaccard similarity at which rows count as near-duplicates (default 0.8)")
    p.set_defaults(handler=cmd_check)


def cmd_check(args) -> int:
    from hone.pipeline import check_command

    return check_command(args.data, args.eval_path, args.model, args.max_length, args.overlength, args.json_path,
                         args.fix, args.show, args.near_dup_threshold)


def add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert data between chat, prompt-completion, alpaca, sharegpt, preference and unpaired (KTO) formats")
    p.add_argument("input", help="data file in any supported format")
    p.add_argument("output", help="JSONL file to write")
    p.add_argument("--to", required=True, choices=["chat", "prompt-completion", "alpaca", "sharegpt", "preference", "unpaired"])
    p.set_defaults(handler=cmd_convert)


def cmd_convert(args) -> int:
    from hone.data.commands import convert_command

    return convert_command(args.input, args.output, args.to)


def add_split(sub) -> None:
    p = sub.add_parser("split", help="seeded train/eval split that keeps near-duplicates on one side")
    p.add_argument("input", help="data file in any supported format")
    p.add_argument("--eval-fraction", type=float, default=0.1, metavar="F", help="share of rows held out (default 0.1)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out-dir", help="write train.jsonl and eval.jsonl here (default: INPUT.train.jsonl / INPUT.eval.jsonl beside the input)")
    p.set_defaults(handler=cmd_split)


def cmd_split(args) -> int:
    from hone.data.commands import split_command

    return split_command(args.input, args.eval_fraction, args.seed, args.out_dir)


def _add_eval_options(p) -> None:
    """Flags shared by `hone eval` and `hone compare` (each overrides the EvalArgs field of the same name)."""
    p.add_argument("--data", help="evaluation file (chat or prompt/completion); default: the run's eval data")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, help="longest answer in tokens (default 64)")
    p.add_argument("--limit", type=int, help="evaluate only the first N examples")
    p.add_argument("--schema", help="JSON-schema file answers must satisfy")
    p.add_argument("--regex", help="regular expression answers must fully match")
    p.add_argument("--metric", action="append", metavar="MODULE:FUNCTION", help="custom metric (repeatable)")
    p.add_argument("--temperature", type=float, help="0 = greedy (default); above 0 samples")
    p.add_argument("--top-p", dest="top_p", type=float, help="nucleus sampling mass when temperature > 0")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="prompts generated together (default 16)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="compute dtype (default: fastest on this device)")


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate one model (base, run folder with an adapter, or merged model) on your data")
    p.add_argument("model", help="model folder, hub id, `embedded`, or a hone run folder")
    _add_eval_options(p)
    p.add_argument("--json", help="write metrics and every answer to this JSON file")
    p.set_defaults(handler=cmd_eval)


def cmd_eval(args) -> int:
    from hone.eval.commands import eval_command

    return eval_command(args)


def add_compare(sub) -> None:
    p = sub.add_parser("compare", help="tuned vs base on the same examples: report.html + report.json with CIs, forgetting check")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--tuned", help="hone run folder (or a merged model folder)")
    which.add_argument("--runs", nargs="+", metavar="RUN", help="several run folders on one base, side by side in one report")
    p.add_argument("--base", help="base model (default: the run's model.path)")
    _add_eval_options(p)
    p.add_argument("--general", help="general text for the forgetting check (default: the embedded corpus's held-out slice)")
    p.add_argument("--no-general", dest="no_general", action="store_true", help="skip the forgetting check")
    p.add_argument("--forgetting-threshold", dest="forgetting_threshold", type=float, help="flag a relative perplexity rise above this (default 0.10)")
    p.add_argument("--judge", help="optional judge model for pairwise LLM-as-judge preference")
    p.add_argument("--judge-rubric", dest="judge_rubric", help="rubric text or file for the judge")
    p.add_argument("--reward-model", dest="reward_model", help="reward model folder: win rate of tuned's answers over base's")
    p.add_argument("--out", help="report folder (default: TUNED/eval; with --runs, the first run's eval-runs)")
    p.set_defaults(handler=cmd_compare)


def cmd_compare(args) -> int:
    from hone.eval.commands import compare_command

    return compare_command(args)


def add_score(sub) -> None:
    p = sub.add_parser("score", help="rate answers with a reward model: pair accuracy, or each answer's reward")
    p.add_argument("model", help="reward model folder: a one-label sequence-classification model, or a SEQ_CLS adapter")
    p.add_argument("--data", required=True, help="preference pairs, unpaired (KTO) rows, chat or prompt/completion data")
    p.add_argument("--base", help="base model under an adapter (default: the one its adapter_config names)")
    p.add_argument("--out", help="write one JSON line of rewards per row here")
    p.add_argument("--json", help="write the summary as JSON here")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="sequences scored together (default 8)")
    p.add_argument("--max-length", dest="max_length", type=int, default=4096, metavar="N",
                   help="skip (and count) answers whose prompt + answer exceed N tokens (default 4096)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="compute dtype (default float32)")
    p.add_argument("--trust-remote-code", dest="trust_remote_code", action="store_true",
                   help="run the model's own Python code (only for authors you trust)")
    p.set_defaults(handler=cmd_score)


def cmd_score(args) -> int:
    from hone.eval.commands import score_command

    return score_command(args)


def add_adapters(sub) -> None:
    p = sub.add_parser("adapters", help="work with several adapters on one base: combine them into one")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = actions.add_parser("combine", help="one LoRA adapter from several runs (PEFT's weighted combination), evaluated against each")
    c.add_argument("runs", nargs="+", metavar="RUN", help="hone run folders with LoRA adapters on the same base")
    c.add_argument("--weights", nargs="+", type=float, metavar="W", help="one weight per run (default 1 each)")
    c.add_argument("--how", default="cat", choices=["linear", "cat", "svd", "ties", "dare_ties"],
                   help="PEFT combination: cat (default; rank = sum of ranks, exact), svd, linear, ties, dare_ties")
    c.add_argument("--density", type=float, default=0.5, help="ties, dare_ties: share of each adapter's entries kept (default 0.5)")
    c.add_argument("--rank", type=int, help="svd: rank of the combined adapter (default: the largest source rank)")
    c.add_argument("--out", required=True, help="new run folder for the combined adapter (+ eval/ with the reports)")
    c.add_argument("--limit", type=int, help="evaluate on the first N held-out examples of each source")
    c.add_argument("--no-general", dest="no_general", action="store_true", help="skip the forgetting check")
    c.set_defaults(handler=cmd_adapters_combine)


def cmd_adapters_combine(args) -> int:
    from hone.eval.combine import combine_command

    return combine_command(args)


def add_export(sub) -> None:
    p = sub.add_parser("export", help="a standalone model: merged Hugging Face folder, or GGUF + Ollama Modelfile with a parity check")
    p.add_argument("run", help="a run folder written by hone train")
    p.add_argument("--out", required=True, help="folder for the exported model (must be new or empty)")
    p.add_argument("--format", default="hf", choices=["hf", "gguf"],
                   help="hf: safetensors + config + tokenizer (default); gguf: one llama.cpp file, a Modelfile and parity.json")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights dtype of the merged model (hf)")
    p.add_argument("--gguf-type", default="f16", metavar="TYPE",
                   help="gguf weights: f16 (default), bf16, q8_0, f32; q4_k_m, q5_k_m, q6_k, ... with llama-quantize on PATH")
    p.add_argument("--no-modelfile", action="store_true", help="gguf: write no Ollama Modelfile")
    p.add_argument("--parity-examples", type=int, default=64, metavar="N", help="gguf: examples of the run's data the parity check renders")
    p.set_defaults(handler=cmd_export)


def cmd_export(args) -> int:
    if args.format == "gguf":
        from hone.export.commands import gguf_export_command

        return gguf_export_command(args.run, args.out, args.gguf_type, not args.no_modelfile, args.parity_examples)
    from hone.export.merge import merge_run

    print(f"merged model written to {merge_run(args.run, args.out, args.dtype)}")
    return 0


def add_derive(sub) -> None:
    p = sub.add_parser("derive", help="a smaller student model cut from a teacher (a subset of its layers), for distillation")
    p.add_argument("teacher", help="model folder, hub id, `embedded`, or a hone run folder (merged first)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--keep", type=int, help="keep N decoder layers, evenly spaced (first and last included)")
    which.add_argument("--layers", help="the decoder layers to keep, e.g. 0,3")
    p.add_argument("--out", required=True, help="folder for the student (must be new or empty)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights dtype (default float32)")
    p.set_defaults(handler=cmd_derive)


def cmd_derive(args) -> int:
    from hone.model.derive import derive_command

    return derive_command(args)


def add_ui(sub) -> None:
    p = sub.add_parser("ui", help="the whole path in a local web page: data doctor, plan, training runs, comparison, chat")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs --auth)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--auth", metavar="USER:PASS", help="HTTP basic auth for every page and API call")
    p.add_argument("--runs", default="runs", metavar="DIR", help="folder whose runs are listed and where new runs go (default: runs)")
    p.set_defaults(handler=cmd_ui)


def cmd_ui(args) -> int:
    from hone.ui.server import ui_command

    return ui_command(args.host, args.port, args.auth, args.runs)


def add_serve(sub) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible server for a model and its LoRA adapters (one adapter per request)")
    p.add_argument("run", help="a hone run folder (its adapter is served beside its base), a model folder, or `embedded`")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=RUN",
                   help="also serve the LoRA run RUN as model NAME (repeatable); requests pick it with \"model\": NAME")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", dest="api_key", help="require `Authorization: Bearer KEY` on every request (or set HONE_API_KEY)")
    p.add_argument("--engine", choices=["hone", "vllm"], default="hone", help="hone's batching engine (default) or vLLM on a CUDA machine")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="compute dtype (default: the run's, else fastest here)")
    p.add_argument("--max-batch", dest="max_batch", type=int, default=32, help="answers decoded together in one step (default 32)")
    p.add_argument("--max-queue", dest="max_queue", type=int, default=256, help="answers waiting before requests get 429 (default 256)")
    p.add_argument("--threads", type=int, help="CPU threads for decoding steps (default: torch's; prefill uses torch's)")
    p.add_argument("--prefix-cache", dest="prefix_cache", type=int, default=4096, metavar="TOKENS",
                   help="keep the keys and values of up to TOKENS recent prompt tokens per server, so prompts that start "
                        "the same way (a system prompt) prefill only the rest (default 4096; 0: off)")
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args) -> int:
    from hone.serve.command import ServeArgs, serve_command

    return serve_command(ServeArgs(args.run, args.adapter, args.host, args.port, args.api_key, args.engine, args.dtype,
                                   args.max_batch, args.max_queue, args.threads, args.prefix_cache))


BUILDERS = [add_advise, add_check, add_convert, add_split, add_plan, add_train, add_pretrain, add_quickstart, add_eval, add_compare, add_score, add_adapters, add_export, add_derive, add_ui, add_serve]


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
    from hone.versions import warn_untested

    quiet_libraries()
    warn_untested()
    try:
        return args.handler(args) or 0
    except HoneError as exc:
        print(f"hone: error: {exc.line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hone: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `hone check FILE | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
