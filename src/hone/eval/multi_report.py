"""report.json and report.html for several models side by side (`hone compare --runs`,
`hone adapters combine`): one column per model, each run's paired change against the base
with its 95% CI, and the forgetting check per run. Self-contained like report.py's page."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from hone.eval.metrics import sorted_metric_names
from hone.eval.report import HIDDEN, _describe, _jsonable, _num, html_page

SKIPPED = HIDDEN | {"output_chars", "examples_per_s"}


def write_side_by_side(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write `out_dir/report.json` and `out_dir/report.html`; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    json_path.write_text(json.dumps(report, indent=1, default=_jsonable))
    html_path.write_text(side_by_side_html(report))
    return json_path, html_path


def cell(report: dict, model: str, metric: str) -> str:
    """A model's value of `metric`, with a run's change against the base and its CI."""
    value = report["metrics"][model].get(metric)
    if value is None:
        return "n/a"
    delta = report["runs"].get(model, {}).get("deltas", {}).get(metric)
    if not delta or "ci_low" not in delta:
        return _num(value)
    return f"{_num(value)} ({delta['delta']:+.3f} [{delta['ci_low']:+.3f}, {delta['ci_high']:+.3f}])"


def metric_rows(report: dict, only: list[str] | None = None) -> list[tuple]:
    """(metric, value per model...) rows in display order; runs carry their change and CI."""
    models = [m["name"] for m in report["models"]]
    names = only or sorted_metric_names(set().union(*(report["metrics"][m] for m in models)))
    rows = []
    for name in names:
        if name in SKIPPED or all(report["metrics"][m].get(name) is None for m in models):
            continue
        rows.append((name, *(cell(report, m, name) for m in models)))
    return rows


def side_by_side_html(report: dict) -> str:
    """The whole page as one string (pure: the same report gives the same page)."""
    models = report["models"]
    head = "".join(f"<th>{escape(m['name'])}<br><span class=muted>{escape(m['kind'])}</span></th>" for m in models)
    body = "".join("<tr><td class=l>" + escape(row[0]) + "</td>" + "".join(f"<td>{escape(c)}</td>" for c in row[1:])
                   + f'<td class="l muted">{escape(_describe(row[0]))}</td></tr>' for row in metric_rows(report))
    sections = [
        f"<h1>hone: {escape(report.get('title') or f'{len(models) - 1} runs against ' + models[0]['path'])}</h1>",
        f'<p class="meta">{report["data"]["examples"]} examples from {escape(report["data"]["source"])} · '
        f'hone {escape(report["hone_version"])} · {escape(report["created"])}</p>',
        verdicts(report),
        f"<h2>Metrics</h2><table><tr><th class=l>metric</th>{head}<th class=l>meaning</th></tr>{body}</table>"
        '<p class="note">Each run: its value, then (change against the base, paired per example [95% bootstrap '
        "interval]). Each run's full comparison (charts, examples, curves) is linked below.</p>",
        forgetting_table(report),
        "<h2>Runs</h2><ul>" + "".join(f'<li><a href="{escape(r["report"])}">{escape(n)}</a>: {escape(_path(report, n))}</li>'
                                      for n, r in report["runs"].items()) + "</ul>",
        extra_section(report),
    ]
    return html_page(sections)


def verdicts(report: dict) -> str:
    lines = []
    for name, run in report["runs"].items():
        for line in run["verdict"]:
            cls = ' class="flag"' if "FLAGGED" in line else ""
            lines.append(f"<p{cls}><b>{escape(name)}</b>: {escape(line)}</p>")
    return f'<div class="verdict">{"".join(lines)}</div>'


def forgetting_table(report: dict) -> str:
    rows = []
    for name, run in report["runs"].items():
        f = run.get("forgetting")
        if not f:
            continue
        state = '<span class="flag">FLAGGED</span>' if f["flagged"] else '<span class="ok">within threshold</span>'
        rows.append(f"<tr><td class=l>{escape(name)}</td><td>{f['baseline_perplexity']:.3f}</td><td>{f['tuned_perplexity']:.3f}</td>"
                    f"<td>{f['relative_change']:+.2%}</td><td class=l>{state}</td></tr>")
    if not rows:
        return "<h2>Forgetting</h2><p class=note>not measured (no general text).</p>"
    return ("<h2>Forgetting</h2><p class=note>Perplexity on general held-out text, base against each run.</p>"
            "<table><tr><th class=l>run</th><th>base</th><th>run</th><th>change</th><th class=l>check</th></tr>"
            + "".join(rows) + "</table>")


def extra_section(report: dict) -> str:
    """A combination's retention table (`hone adapters combine`), when the report has one."""
    retention = report.get("retention")
    if not retention:
        return ""
    rows = "".join(
        f"<tr><td class=l>{escape(r['task'])}</td><td class=l>{escape(r['metric'])}</td><td>{r['specialist']:.3f}</td>"
        f"<td>{r['combined']:.3f}</td><td>{r['kept']:.1%}</td><td class=l>{escape(r['verdict'])}</td></tr>" for r in retention)
    return ("<h2>Combined against each specialist</h2><table><tr><th class=l>task</th><th class=l>metric</th>"
            f"<th>specialist</th><th>combined</th><th>kept</th><th class=l>verdict</th></tr>{rows}</table>")


def _path(report: dict, name: str) -> str:
    return next((m["path"] for m in report["models"] if m["name"] == name), "")
