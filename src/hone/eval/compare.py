"""Evaluate one model, or a tuned model against its base on the same examples.

`evaluate_model` -> per-example answers and scores plus losses; `compare_models` runs it
for both, pairs the per-example scores (stats.py), checks forgetting and overfitting, and
writes report.json and report.html (report.py).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from dataclasses import dataclass
from pathlib import Path

from hone import __version__
from hone.config import EvalArgs, PreferenceArgs
from hone.data.dataset import read_examples, require_clean
from hone.data.formats import Example
from hone.data.render import reference_answer, render_prompt
from hone.data.split import split_examples
from hone.errors import HoneError
from hone.eval.curves import check_overfitting, read_curves
from hone.eval.forgetting import general_perplexity, measure_forgetting, resolve_general
from hone.model.generate import Generation, GenerationArgs, generate_answers
from hone.eval.judge import judge_pairwise
from hone.eval.loss import LossResult, assistant_loss
from hone.eval.metrics import (LOWER_IS_BETTER, MetricSettings, build_settings, corpus_scores, direction, mean_scores,
                               score_example, sorted_metric_names)
from hone.eval.models import EvalModel, describe, load_for_eval
from hone.eval.preference import generation_view, pair_logprobs, preference_report, preference_verdict, reward_win_rate
from hone.eval.report import write_report
from hone.eval.stats import bootstrap_ci, compare_paired

@dataclass
class ModelResult:
    """One model's evaluation: per-example answers and scores, and the flat metric means."""

    name: str
    kind: str
    answers: list[Generation]
    scores: list[dict]
    metrics: dict
    general: LossResult | None = None


def load_eval_examples(data: str | None, run_dir: Path | None = None, limit: int | None = None) -> tuple[list[Example], str]:
    """(examples, description). Without `data`, a run folder's eval file or its held-out split."""
    if data is None and run_dir is not None:
        config = describe(str(run_dir))[1]
        if config and config.data.eval:
            data = config.data.eval
        elif config and config.data.train:
            train = require_clean(read_examples(config.data.train), config.data.train)
            _, held = split_examples(train, config.data.eval_fraction, config.train.seed, config.data.max_eval_examples)
            return _usable(held, config.data.train)[:limit], f"held-out split of {config.data.train}"
    if data is None:
        raise HoneError("no evaluation data given", "pass --data EVAL.jsonl (chat or prompt/completion records)")
    if not Path(data).is_file():
        raise HoneError(f"evaluation data not found: {data}", "check the --data path")
    examples = _usable(require_clean(read_examples(data), data), data)
    return examples[:limit] if limit else examples, data


def _usable(examples: list[Example], source: str) -> list[Example]:
    usable = [e for e in examples if e.kind in ("chat", "completion", "preference", "unpaired")]
    if examples and not usable:
        raise HoneError(f"{source}: plain-text records have no reference answers to compare with",
                        "evaluate on chat or prompt/completion data; use --general for plain text")
    return usable


def evaluate_model(loaded: EvalModel, examples: list[Example], args: EvalArgs, settings: MetricSettings,
                   general: Path | None = None) -> ModelResult:
    """Generate an answer to every example, score it, and measure loss (and general perplexity)."""
    tokenizer, model = loaded.tokenizer, loaded.model
    prompts = [render_prompt(tokenizer, e) for e in examples]
    references = [reference_answer(e) for e in examples]
    gen_args = GenerationArgs(args.max_new_tokens, args.temperature, args.top_p, args.batch_size, args.seed)
    started = time.perf_counter()
    answers = generate_answers(model, tokenizer, prompts, gen_args, loaded.device)
    seconds = time.perf_counter() - started
    scores = []
    for answer, reference in zip(answers, references):
        row = score_example(answer.text, reference, settings)
        row["output_tokens"] = float(answer.new_tokens)
        row["truncated"] = float(not answer.stopped)
        scores.append(row)
    loss = assistant_loss(model, tokenizer, examples, loaded.device, loaded.compute_dtype)
    metrics = {"eval_loss": loss.loss, "perplexity": loss.perplexity, "eval_tokens": loss.tokens}
    metrics.update(mean_scores(scores))
    metrics.update(corpus_scores([a.text for a in answers], references))
    metrics["examples_per_s"] = len(examples) / max(seconds, 1e-9)
    metrics["n_examples"] = len(examples)
    general_loss = None
    if general is not None:
        general_loss = general_perplexity(model, tokenizer, loaded.device, loaded.compute_dtype, general, args.general_max_tokens)
        metrics["general_perplexity"] = general_loss.perplexity
    return ModelResult(loaded.name, loaded.kind, answers, scores, metrics, general_loss)


def evaluate_one(name: str, args: EvalArgs, data: str | None = None, dtype: str | None = None) -> tuple[ModelResult, list[Example], str]:
    """`hone eval`: load `name` and evaluate it on `data` (default: a run folder's eval data)."""
    settings = build_settings(args.schema, args.regex, args.metrics)
    _, config = describe(name)
    examples, source = load_eval_examples(data or args.data, Path(name) if config else None, args.limit)
    examples = [v for v in map(generation_view, examples) if v is not None]
    loaded = load_for_eval(name, dtype=dtype)
    return evaluate_model(loaded, examples, args, settings), examples, source


def compare_models(base: str | None, tuned: str, data: str | None, out_dir: Path, args: EvalArgs | None = None,
                   dtype: str | None = None, examples: list[Example] | None = None) -> dict:
    """Evaluate `base` and `tuned` on the same examples; write report.json + report.html to `out_dir`.

    `base` None means the tuned run's own base model; `args` says how (metrics, schema,
    general text for the forgetting check, sampling, judge...). Returns the report dict
    (see report.json). `examples`: the held-out examples a run already read (`hone train`
    hands its own down), else they come from `data` or the run folder.
    """
    args = args or EvalArgs()
    settings = build_settings(args.schema, args.regex, args.metrics)
    kind, run_config = describe(tuned)
    run_dir = Path(tuned) if run_config else None
    base = base or (run_config.model.path if run_config else None)
    if base is None:
        raise HoneError(f"{tuned} is not a hone run folder, so its base model is unknown", "pass --base MODEL")
    if examples is not None and not (data or args.data):
        examples, source = _usable(examples, "the run's held-out examples")[: args.limit], "the run's held-out examples"
    else:
        examples, source = load_eval_examples(data or args.data, run_dir, args.limit)
    pairs = [e for e in examples if e.kind == "preference"]  # also scored as pairs, not only as chosen answers
    examples = [v for v in map(generation_view, examples) if v is not None]
    general_path = resolve_general(args.general)
    like = run_config.model if run_config else None
    results, logps = {}, {}
    for role, name in (("baseline", base), ("tuned", tuned)):
        loaded = load_for_eval(name, like=like, dtype=dtype)
        results[role] = evaluate_model(loaded, examples, args, settings, general_path)
        logps[role] = pair_logprobs(loaded, pairs, args.batch_size) if pairs else []
        del loaded
        gc.collect()
    judge = run_judge(args, examples, results) if args.judge else None
    extra = preference_sections(args, run_config, examples, results, logps)
    report = build_report(results["baseline"], results["tuned"], examples, source, args, run_dir, general_path, judge, extra)
    write_report(report, Path(out_dir))
    return report


def preference_sections(args: EvalArgs, run_config, examples: list[Example], results: dict, logps: dict) -> dict:
    """The report's `preference` (held-out pairs) and `reward_win_rate` (eval.reward_model) entries."""
    beta = run_config.preference.beta if run_config else PreferenceArgs().beta
    preference = (preference_report(logps["baseline"], logps["tuned"], beta, args.bootstrap_samples, args.seed)
                  if logps["baseline"] else None)
    win = None
    if args.reward_model:
        win = reward_win_rate(args.reward_model, examples, [a.text for a in results["baseline"].answers],
                              [a.text for a in results["tuned"].answers], args.bootstrap_samples, args.seed, args.batch_size)
    return {"preference": preference, "reward_win_rate": win}


def run_judge(args: EvalArgs, examples: list[Example], results: dict) -> dict:
    return judge_pairwise(args.judge, examples, [a.text for a in results["baseline"].answers],
                          [a.text for a in results["tuned"].answers], args.judge_rubric)


def build_report(baseline: ModelResult, tuned: ModelResult, examples: list[Example], source: str, args: EvalArgs,
                 run_dir: Path | None, general_path: Path | None, judge: dict | None = None, extra: dict | None = None) -> dict:
    """Every number of the comparison, JSON-ready (report.html is drawn from this alone). `extra`:
    more sections (preference accuracy, reward-model win rate), whose verdict lines are added."""
    deltas = paired_deltas(baseline.scores, tuned.scores, args)
    for name in ("eval_loss", "perplexity", "general_perplexity"):
        if baseline.metrics.get(name) is not None and tuned.metrics.get(name) is not None:
            deltas[name] = {"baseline": baseline.metrics[name], "tuned": tuned.metrics[name],
                            "delta": tuned.metrics[name] - baseline.metrics[name]}
    primary = primary_metric(tuned.metrics, args)
    forgetting = None
    if baseline.general and tuned.general:
        forgetting = dataclasses.asdict(measure_forgetting(baseline.general, tuned.general, args.forgetting_threshold, str(general_path)))
    curves = read_curves(run_dir)
    report = {
        "hone_version": __version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "models": {"baseline": {"name": baseline.name, "kind": baseline.kind}, "tuned": {"name": tuned.name, "kind": tuned.kind}},
        "data": {"source": source, "examples": len(examples)},
        "settings": {k: v for k, v in dataclasses.asdict(args).items() if k not in ("compare", "data")},
        "primary_metric": primary,
        "baseline": _clean(baseline.metrics),
        "tuned": _clean(tuned.metrics),
        "deltas": deltas,
        "forgetting": forgetting,
        "forgetting_note": None if forgetting else "skipped: no general text (pass --general FILE)",
        "overfitting": dataclasses.asdict(check_overfitting(curves)) if run_dir else None,
        "curves": {"train": curves.train, "eval": curves.eval},
        "judge": judge,
        "examples": side_by_side(examples, baseline, tuned, primary),
        "predictions": [{"line": e.line, "reference": reference_answer(e), "baseline": b.text, "tuned": t.text}
                        for e, b, t in zip(examples, baseline.answers, tuned.answers)],
    }
    report.update(extra or {})
    report["verdict"] = verdict(report) + preference_verdict(report.get("preference"), report.get("reward_win_rate"))
    return report


def primary_metric(metrics: dict, args: EvalArgs) -> str:
    """The metric a verdict leads with: `eval.primary_metric`, else per-field JSON match, else token F1."""
    if args.primary_metric:
        if args.primary_metric not in metrics:
            raise HoneError(f"eval.primary_metric={args.primary_metric} is not a metric of this evaluation",
                            f"use one of: {', '.join(sorted_metric_names(k for k, v in metrics.items() if v is not None))}")
        return args.primary_metric
    return "field_exact_match" if metrics.get("field_exact_match") is not None else "token_f1"


def paired_deltas(base_scores: list[dict], tuned_scores: list[dict], args: EvalArgs) -> dict:
    names = list(dict.fromkeys(k for row in base_scores + tuned_scores for k in row))
    out = {}
    for name in names:
        stats = compare_paired([r.get(name) for r in base_scores], [r.get(name) for r in tuned_scores],
                               args.bootstrap_samples, args.seed, higher_is_better=name not in LOWER_IS_BETTER)
        if stats is None:
            continue
        entry = {**stats.to_dict(), "direction": direction(name)}
        # Each side's own interval too, for error bars on the per-model means.
        for role, rows in (("baseline", base_scores), ("tuned", tuned_scores)):
            values = [r.get(name) for r in rows if r.get(name) is not None]
            entry[f"{role}_ci"] = list(bootstrap_ci(values, args.bootstrap_samples, seed=args.seed))
        out[name] = entry
    return out


def side_by_side(examples: list[Example], baseline: ModelResult, tuned: ModelResult, metric: str, count: int = 5) -> dict:
    """The examples whose `metric` improved and regressed most, with both answers."""
    rows = []
    for index, example in enumerate(examples):
        b, t = baseline.scores[index].get(metric), tuned.scores[index].get(metric)
        if b is None or t is None:
            continue
        rows.append({"line": example.line, "input": _prompt_text(example), "reference": reference_answer(example),
                     "baseline": baseline.answers[index].text, "tuned": tuned.answers[index].text,
                     "baseline_score": b, "tuned_score": t, "delta": t - b})
    rows.sort(key=lambda r: r["delta"])
    improved = [r for r in reversed(rows) if r["delta"] > 0][:count]
    regressed = [r for r in rows if r["delta"] < 0][:count]
    return {"metric": metric, "improved": improved, "regressed": regressed}


def _prompt_text(example: Example) -> str:
    if example.kind == "completion":
        return example.prompt
    users = [m.get("content") or "" for m in example.messages if m["role"] == "user"]
    return users[-1] if users else ""


def verdict(report: dict) -> list[str]:
    """Plain-language lines for the top of the report and the terminal."""
    lines = []
    primary = report["primary_metric"]
    d = report["deltas"].get(primary)
    if d:
        if d["significant"]:
            word = "better" if d["delta"] > 0 else "worse"
            lines.append(f"Tuned is {word} than base on {primary}: {d['baseline']:.3f} -> {d['tuned']:.3f} "
                         f"({d['delta']:+.3f}, 95% CI {d['ci_low']:+.3f} to {d['ci_high']:+.3f}, p={_p(d['p_value'])}, "
                         f"{d['wins']} better / {d['ties']} same / {d['losses']} worse of {d['n']}).")
        else:
            lines.append(f"No significant difference on {primary}: {d['baseline']:.3f} -> {d['tuned']:.3f} "
                         f"(95% CI {d['ci_low']:+.3f} to {d['ci_high']:+.3f} includes 0; more eval examples narrow it).")
    forgetting = report["forgetting"]
    if forgetting:
        state = "FLAGGED: the model forgot general language" if forgetting["flagged"] else "within threshold"
        lines.append(f"Forgetting: general-text perplexity {forgetting['baseline_perplexity']:.2f} -> {forgetting['tuned_perplexity']:.2f} "
                     f"({forgetting['relative_change']:+.1%}, threshold +{forgetting['threshold']:.0%}): {state}.")
    else:
        lines.append(f"Forgetting: {report['forgetting_note']}.")
    overfitting = report["overfitting"]
    if overfitting:
        lines.append(("Overfitting FLAGGED: " if overfitting["flagged"] else "Overfitting: not flagged; ") + overfitting["reason"] + ".")
    return lines


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _clean(metrics: dict) -> dict:
    """JSON has no NaN: missing numbers become null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def format_comparison_table(report: dict, only: list[str] | None = None) -> str:
    """A before/after table for the terminal (all metrics, or those in `only`), then the verdict."""
    rows = [("metric", "base", "tuned", "delta", "95% CI")]
    for name in only if only is not None else sorted_metric_names(report["tuned"]):
        base, tune = report["baseline"].get(name), report["tuned"].get(name)
        if name in ("n_examples", "eval_tokens", "output_chars") or base is None or tune is None:
            continue
        d = report["deltas"].get(name, {})
        ci = f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if "ci_low" in d else ""
        rows.append((name, _num(base), _num(tune), f"{tune - base:+.3f}", ci))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:] + [""] + report["verdict"])


def format_metrics_table(metrics: dict) -> str:
    """One model's metrics, one per line."""
    return "\n".join(f"{name:<26} {_num(metrics[name])}" for name in sorted_metric_names(metrics) if metrics[name] is not None)


def _num(value) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if abs(value) >= 100 else f"{value:.3f}"
