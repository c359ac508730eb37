"""report.json (every number) and report.html (one self-contained page drawn from it:
inline CSS and SVG, no scripts, no external assets, readable from disk)."""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path

from hone.eval import svg
from hone.eval.metrics import direction, sorted_metric_names

UNIT_METRICS = {"exact_match", "normalized_exact_match", "token_f1", "rouge_l", "bleu", "chrf", "json_valid",
                "schema_valid", "field_exact_match", "regex_match", "corpus_bleu", "corpus_chrf"}
HIDDEN = {"n_examples", "eval_tokens"}
DESCRIPTIONS = {
    "eval_loss": "cross-entropy on the reference answers' tokens (lower is better)",
    "perplexity": "exp(eval_loss)",
    "exact_match": "answer identical to the reference",
    "normalized_exact_match": "identical after lower-casing, dropping punctuation and articles",
    "token_f1": "word overlap F1 with the reference",
    "rouge_l": "longest common word subsequence F1",
    "bleu": "sentence BLEU (sacrebleu), 0-1",
    "corpus_bleu": "corpus-level BLEU (sacrebleu), 0-1",
    "corpus_chrf": "corpus-level chrF (sacrebleu), 0-1",
    "chrf": "sentence chrF (sacrebleu), 0-1",
    "json_valid": "answer parses as JSON",
    "schema_valid": "answer satisfies the JSON schema",
    "field_exact_match": "share of the reference's JSON fields answered exactly",
    "regex_match": "answer fully matches the format regex",
    "empty": "share of empty answers",
    "truncated": "share of answers cut by max_new_tokens",
    "output_tokens": "mean generated tokens",
    "output_chars": "mean answer length in characters",
    "general_perplexity": "perplexity on general held-out text (forgetting check)",
    "examples_per_s": "generation speed",
}
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2330;max-width:1100px;margin:24px auto;padding:0 20px;line-height:1.45}
h1{font-size:24px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #dde1e8;padding-bottom:4px}
.meta{color:#5b6475;font-size:13px}.verdict{background:#f3f6fb;border-left:4px solid #2f6fdf;padding:10px 14px;margin:16px 0}
.verdict p{margin:4px 0}.flag{color:#c62828;font-weight:600}.ok{color:#1b7a3a;font-weight:600}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{padding:4px 10px;border-bottom:1px solid #eceef2;text-align:right;vertical-align:top;white-space:nowrap}td.l{white-space:normal}
th{background:#f7f8fa}td.l,th.l{text-align:left}.better{color:#1b7a3a}.worse{color:#c62828}.muted{color:#8a94a6}
.pairs td{text-align:left;max-width:330px;white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.note{color:#5b6475;font-size:13px}svg{max-width:100%;height:auto}
"""


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write `out_dir/report.json` and `out_dir/report.html`; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    json_path.write_text(json.dumps(report, indent=1, default=_jsonable))
    html_path.write_text(build_html(report))
    return json_path, html_path


def _jsonable(value):
    return float(value) if hasattr(value, "__float__") else str(value)


def build_html(report: dict) -> str:
    """The whole page as one string (pure: the same report gives the same page)."""
    models = report["models"]
    sections = [
        f"<h1>hone: {escape(models['tuned']['name'])} vs {escape(models['baseline']['name'])}</h1>",
        f'<p class="meta">{report["data"]["examples"]} examples from {escape(report["data"]["source"])} · '
        f'base: {escape(models["baseline"]["name"])} ({models["baseline"]["kind"]}) · tuned: {escape(models["tuned"]["name"])} '
        f'({models["tuned"]["kind"]}) · hone {escape(report["hone_version"])} · {escape(report["created"])}</p>',
        verdict_section(report),
        metrics_section(report),
        charts_section(report),
        forgetting_section(report),
        curves_section(report),
        judge_section(report),
        preference_section(report),
        reward_section(report),
        examples_section(report),
        settings_section(report),
    ]
    return html_page(sections)


def html_page(sections: list[str]) -> str:
    """One self-contained page (the style inline, nothing fetched) of the non-empty `sections`."""
    body = "\n".join(s for s in sections if s)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>hone report</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def verdict_section(report: dict) -> str:
    lines = []
    for line in report["verdict"]:
        cls = "flag" if "FLAGGED" in line else ""
        lines.append(f'<p class="{cls}">{escape(line)}</p>' if cls else f"<p>{escape(line)}</p>")
    return f'<div class="verdict">{"".join(lines)}</div>'


def metrics_section(report: dict) -> str:
    head = ("<tr><th class=l>metric</th><th>base</th><th>tuned</th><th>change</th><th>95% CI of change</th>"
            "<th>p</th><th>better / same / worse</th><th class=l>meaning</th></tr>")
    rows = []
    for name in sorted_metric_names(report["tuned"]):
        base, tuned = report["baseline"].get(name), report["tuned"].get(name)
        if name in HIDDEN or base is None or tuned is None:
            continue
        d = report["deltas"].get(name, {})
        change = tuned - base
        cls = _change_class(change, d.get("direction") or direction(name), d.get("significant", None))
        ci = f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if "ci_low" in d else '<span class="muted">n/a</span>'
        p = _p(d["p_value"]) if "p_value" in d else ""
        wtl = f"{d['wins']} / {d['ties']} / {d['losses']}" if "wins" in d and d.get("direction") != "neutral" else ""
        rows.append(f"<tr><td class=l>{escape(name)}</td><td>{_num(base)}</td><td>{_num(tuned)}</td>"
                    f'<td class="{cls}">{change:+.3f}</td><td>{ci}</td><td>{p}</td><td>{wtl}</td>'
                    f'<td class="l muted">{escape(_describe(name))}</td></tr>')
    note = ('<p class="note">Change = tuned − base, paired per example. The interval is a percentile bootstrap of the mean '
            'change; p is a two-sided sign-flip permutation test. Green/red: the interval excludes 0.</p>')
    return f"<h2>Metrics</h2><table>{head}{''.join(rows)}</table>{note}"


def charts_section(report: dict) -> str:
    names = [n for n in sorted_metric_names(report["deltas"]) if _is_unit(n) and n in report["deltas"]]
    if not names:
        return ""
    bars = [{"label": n, "baseline": report["deltas"][n]["baseline"], "tuned": report["deltas"][n]["tuned"],
             "baseline_ci": report["deltas"][n].get("baseline_ci"), "tuned_ci": report["deltas"][n].get("tuned_ci")} for n in names]
    deltas = []
    for n in names:
        d = report["deltas"][n]
        good = None if not d["significant"] else (d["delta"] > 0) == (d["direction"] == "higher")
        deltas.append({"label": n, "delta": d["delta"], "ci_low": d["ci_low"], "ci_high": d["ci_high"], "good": good})
    return ("<h2>Scores</h2><p class=note>Mean per metric (0–1) with the 95% bootstrap interval of each model's mean.</p>"
            + svg.bar_chart(bars)
            + "<h2>Change, tuned − base</h2><p class=note>Dot: mean paired change; whisker: 95% interval; dashed line: no change.</p>"
            + svg.delta_chart(deltas))


def forgetting_section(report: dict) -> str:
    f = report.get("forgetting")
    if not f:
        return f"<h2>Forgetting</h2><p class=note>{escape(report.get('forgetting_note') or 'not measured')}.</p>"
    state = '<span class="flag">FLAGGED</span>' if f["flagged"] else '<span class="ok">within threshold</span>'
    return (f"<h2>Forgetting</h2><p>Perplexity on general held-out text ({escape(f['text'])}, {f['tokens']:,} tokens): "
            f"{f['baseline_perplexity']:.3f} → {f['tuned_perplexity']:.3f} ({f['relative_change']:+.2%}; flagged above "
            f"+{f['threshold']:.0%}): {state}.</p>"
            + svg.forgetting_chart(f["baseline_perplexity"], f["tuned_perplexity"], f["threshold"]))


def curves_section(report: dict) -> str:
    curves, over = report.get("curves") or {}, report.get("overfitting")
    if not curves.get("train"):
        return ""
    series = [{"name": "train loss", "points": curves["train"], "color": svg.TUNED_COLOR}]
    if curves.get("eval"):
        series.append({"name": "eval loss", "points": curves["eval"], "color": svg.EVAL_COLOR, "markers": True})
    text = ""
    if over:
        cls = "flag" if over["flagged"] else "ok"
        text = f'<p><span class="{cls}">{"Overfitting flagged" if over["flagged"] else "No overfitting flagged"}</span>: {escape(over["reason"])}.</p>'
    return "<h2>Training curves</h2>" + text + svg.line_chart(series)


def judge_section(report: dict) -> str:
    j = report.get("judge")
    if not j:
        return ""
    return (f"<h2>LLM judge</h2><p>Judge {escape(j['judge'])} preferred the tuned answer with probability "
            f"{j['tuned_preference']:.3f} (95% CI {j['ci_low']:.3f}–{j['ci_high']:.3f}; 0.5 = no preference), averaged over "
            f"both answer orders. Tuned preferred on {j['tuned_wins']}, base on {j['baseline_wins']}, undecided on {j['ties']} of {j['n']}. "
            f"Position bias (preference for whichever answer came first): {j['first_position_bias']:+.3f}.</p>")


def preference_section(report: dict) -> str:
    p = report.get("preference")
    if not p:
        return ""
    if not p.get("scored"):
        return f"<h2>Held-out preference pairs</h2><p class=note>none of the {p['pairs']} pairs could be scored.</p>"
    rows = []
    for name, label in (("logp_accuracy", "chosen more likely (summed log-prob)"), ("avg_logp_accuracy", "chosen more likely per token")):
        d = p[name]
        cls = _change_class(d["delta"], "higher", d["significant"])
        rows.append(f"<tr><td class=l>{label}</td><td>{d['baseline']:.3f} [{d['baseline_ci'][0]:.3f}, {d['baseline_ci'][1]:.3f}]</td>"
                    f"<td>{d['tuned']:.3f} [{d['tuned_ci'][0]:.3f}, {d['tuned_ci'][1]:.3f}]</td><td class=\"{cls}\">{d['delta']:+.3f}</td>"
                    f"<td>[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]</td><td>{d['wins']} / {d['ties']} / {d['losses']}</td></tr>")
    r, change = p["implicit_reward"], p["logp_change"]
    warning = ""
    if p["chosen_falls_while_margin_rises"]:
        warning = ('<p class="flag">The chosen answers grew less likely while the margin rose: both answers were pushed down, '
                   "the rejected further. Common under DPO; check the tuned answers (preference.sft_weight holds the chosen up).</p>")
    return (f"<h2>Held-out preference pairs</h2><p>{p['scored']} of {p['pairs']} pairs scored by both models.</p>"
            "<table><tr><th class=l>preference accuracy</th><th>base [95% CI]</th><th>tuned [95% CI]</th><th>change</th>"
            f"<th>95% CI of change</th><th>gained / same / lost</th></tr>{''.join(rows)}</table>"
            f"<p>Implicit reward, the base as reference (beta {p['beta']}): accuracy {r['accuracy']:.3f} "
            f"(95% CI {r['accuracy_ci'][0]:.3f}–{r['accuracy_ci'][1]:.3f}), mean margin {r['margin']:+.3f} "
            f"(95% CI {r['margin_ci'][0]:+.3f} to {r['margin_ci'][1]:+.3f}); chosen {r['chosen_reward']:+.3f}, rejected "
            f"{r['rejected_reward']:+.3f}. Log-probability change, tuned − base: chosen {change['chosen']:+.2f}, rejected "
            f"{change['rejected']:+.2f} nats.</p>{warning}"
            "<p class=note>Accuracy: the share of pairs whose chosen answer the model finds more likely than the rejected one. "
            "Intervals are percentile bootstraps; the change is paired per pair.</p>")


def reward_section(report: dict) -> str:
    w = report.get("reward_win_rate")
    if not w:
        return ""
    change = w.get("reward") or {}
    mean = (f" Mean reward {change['baseline']:+.3f} → {change['tuned']:+.3f} (change 95% CI {change['ci_low']:+.3f} to "
            f"{change['ci_high']:+.3f})." if change else "")
    return (f"<h2>Reward model</h2><p>Reward model {escape(w['reward_model'])} scored tuned's answer above base's with rate "
            f"{w['win_rate']:.3f} (95% CI {w['ci_low']:.3f}–{w['ci_high']:.3f}; ties count half; 0.5 = no preference): "
            f"tuned higher on {w['tuned_wins']}, base on {w['baseline_wins']}, equal on {w['ties']} of {w['n']}.{mean}</p>")


def examples_section(report: dict) -> str:
    ex = report["examples"]
    parts = [f"<h2>Examples that changed most ({escape(ex['metric'])})</h2>"]
    for title, rows in (("Improved", ex["improved"]), ("Regressed", ex["regressed"])):
        if not rows:
            parts.append(f"<p class=note>{title}: none.</p>")
            continue
        body = "".join(
            f"<tr><td>line {r['line']}<br>{escape(_short(r['input']))}</td><td>{escape(r['reference'])}</td>"
            f"<td>{escape(r['baseline'])}<br><span class=muted>{r['baseline_score']:.2f}</span></td>"
            f"<td>{escape(r['tuned'])}<br><span class=muted>{r['tuned_score']:.2f}</span></td></tr>" for r in rows)
        parts.append(f'<h3>{title}</h3><table class="pairs"><tr><th class=l>input</th><th class=l>reference</th>'
                     f"<th class=l>base answer</th><th class=l>tuned answer</th></tr>{body}</table>")
    return "".join(parts)


def settings_section(report: dict) -> str:
    rows = "".join(f"<tr><td class=l>{escape(k)}</td><td class=l>{escape(json.dumps(v))}</td></tr>" for k, v in report["settings"].items())
    speed = ""
    if report["baseline"].get("examples_per_s"):
        speed = (f"<p class=note>Generation speed: base {report['baseline']['examples_per_s']:.1f}, tuned "
                 f"{report['tuned']['examples_per_s']:.1f} examples/s. All numbers are in report.json.</p>")
    return f"<h2>Settings</h2><table>{rows}</table>{speed}"


def _is_unit(name: str) -> bool:
    return name in UNIT_METRICS or name.startswith("field.")


def _change_class(change: float, direction: str, significant) -> str:
    if direction == "neutral" or change == 0 or significant is False:
        return ""
    return "better" if (change > 0) == (direction == "higher") else "worse"


def _describe(name: str) -> str:
    if name.startswith("field."):
        return f"JSON field {name[6:]!r} answered exactly"
    return DESCRIPTIONS.get(name, "custom metric")


def _num(value) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3f}"


def _p(value: float) -> str:
    return "&lt;0.001" if value < 0.001 else f"{value:.3f}"


def _short(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
