"""Small SVG charts drawn by hand, so report.html needs no plotting library, script or network.

Each function takes plain numbers and returns one `<svg>` element as a string.
"""

from __future__ import annotations

import math
from html import escape

BASE_COLOR = "#8a94a6"
TUNED_COLOR = "#2f6fdf"
EVAL_COLOR = "#e07b00"
FLAG_COLOR = "#c62828"
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="12"'


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def bar_chart(rows: list[dict], width: int = 720, scale_max: float = 1.0) -> str:
    """Horizontal bars, two per row (base, tuned), each with its 95% CI whisker.

    rows: {"label", "baseline", "tuned", "baseline_ci": [lo, hi], "tuned_ci": [lo, hi]}; values in 0..scale_max.
    """
    label_w, right_pad, bar_h, gap, top = 190, 60, 11, 12, 28
    plot_w = width - label_w - right_pad
    height = top + len(rows) * (2 * bar_h + gap) + 24
    x = lambda v: label_w + plot_w * max(0.0, min(v, scale_max)) / scale_max  # noqa: E731
    parts = [_svg_open(width, height, "Metric means with 95% bootstrap intervals, base vs tuned")]
    parts.append(_legend([("base", BASE_COLOR), ("tuned", TUNED_COLOR)], label_w, 14))
    for tick in range(0, 11, 2):
        value = scale_max * tick / 10
        parts.append(f'<line x1="{_fmt(x(value))}" y1="{top - 4}" x2="{_fmt(x(value))}" y2="{height - 20}" stroke="#e3e6eb"/>')
        parts.append(f'<text x="{_fmt(x(value))}" y="{height - 6}" text-anchor="middle" fill="#667">{value:g}</text>')
    for i, row in enumerate(rows):
        y0 = top + i * (2 * bar_h + gap)
        parts.append(f'<text x="{label_w - 8}" y="{y0 + bar_h + 4}" text-anchor="end" fill="#222">{escape(row["label"])}</text>')
        for j, (role, color) in enumerate((("baseline", BASE_COLOR), ("tuned", TUNED_COLOR))):
            value = row[role]
            if value is None:
                continue
            y = y0 + j * bar_h
            parts.append(f'<rect x="{label_w}" y="{y}" width="{_fmt(x(value) - label_w)}" height="{bar_h - 2}" fill="{color}"><title>{role}: {value:.3f}</title></rect>')
            low, high = row.get(f"{role}_ci") or (None, None)
            if low is not None and high is not None and not math.isnan(low):
                cy = y + (bar_h - 2) / 2
                parts.append(f'<line x1="{_fmt(x(low))}" y1="{_fmt(cy)}" x2="{_fmt(x(high))}" y2="{_fmt(cy)}" stroke="#111" stroke-width="1.2"/>')
                for end in (low, high):
                    parts.append(f'<line x1="{_fmt(x(end))}" y1="{_fmt(cy - 3)}" x2="{_fmt(x(end))}" y2="{_fmt(cy + 3)}" stroke="#111" stroke-width="1.2"/>')
            parts.append(f'<text x="{_fmt(x(value) + 4 if high is None else x(max(value, high)) + 4)}" y="{y + bar_h - 3}" fill="#333" font-size="10">{value:.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def delta_chart(rows: list[dict], width: int = 720) -> str:
    """Forest plot: tuned minus base per metric, dot at the mean delta, whisker = 95% CI, line at 0.

    rows: {"label", "delta", "ci_low", "ci_high", "good": bool | None}.
    """
    label_w, pad, row_h, top = 190, 30, 20, 16
    plot_w = width - label_w - pad
    height = top + len(rows) * row_h + 26
    span = max([abs(v) for r in rows for v in (r["ci_low"], r["ci_high"], r["delta"])] + [0.05]) * 1.1
    x = lambda v: label_w + plot_w * (v + span) / (2 * span)  # noqa: E731
    parts = [_svg_open(width, height, "Change from base to tuned with 95% bootstrap intervals")]
    parts.append(f'<line x1="{_fmt(x(0))}" y1="{top - 6}" x2="{_fmt(x(0))}" y2="{height - 22}" stroke="#999" stroke-dasharray="3,3"/>')
    for value in (-span / 1.1, 0.0, span / 1.1):
        parts.append(f'<text x="{_fmt(x(value))}" y="{height - 8}" text-anchor="middle" fill="#667">{value:+.2f}</text>')
    for i, row in enumerate(rows):
        y = top + i * row_h + row_h / 2
        color = "#888" if row["good"] is None else TUNED_COLOR if row["good"] else FLAG_COLOR
        parts.append(f'<text x="{label_w - 8}" y="{_fmt(y + 4)}" text-anchor="end" fill="#222">{escape(row["label"])}</text>')
        parts.append(f'<line x1="{_fmt(x(row["ci_low"]))}" y1="{_fmt(y)}" x2="{_fmt(x(row["ci_high"]))}" y2="{_fmt(y)}" stroke="{color}" stroke-width="2"/>')
        parts.append(f'<circle cx="{_fmt(x(row["delta"]))}" cy="{_fmt(y)}" r="4" fill="{color}"><title>{row["delta"]:+.3f} [{row["ci_low"]:+.3f}, {row["ci_high"]:+.3f}]</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(series: list[dict], width: int = 720, height: int = 260, y_label: str = "loss") -> str:
    """Lines over training steps. series: {"name", "points": [(step, value)], "color", "markers": bool}."""
    points = [p for s in series for p in s["points"]]
    if not points:
        return ""
    left, right, top, bottom = 56, 16, 26, 34
    x_min, x_max = min(p[0] for p in points), max(p[0] for p in points)
    y_min, y_max = min(p[1] for p in points), max(p[1] for p in points)
    if x_max == x_min:
        x_max = x_min + 1
    margin = (y_max - y_min) * 0.08 or abs(y_max) * 0.1 or 1.0
    y_min, y_max = y_min - margin, y_max + margin
    x = lambda v: left + (width - left - right) * (v - x_min) / (x_max - x_min)  # noqa: E731
    y = lambda v: top + (height - top - bottom) * (y_max - v) / (y_max - y_min)  # noqa: E731
    parts = [_svg_open(width, height, f"{y_label} over training steps")]
    parts.append(_legend([(s["name"], s["color"]) for s in series], left, 14))
    for k in range(5):
        value = y_min + (y_max - y_min) * k / 4
        parts.append(f'<line x1="{left}" y1="{_fmt(y(value))}" x2="{width - right}" y2="{_fmt(y(value))}" stroke="#eceef2"/>')
        parts.append(f'<text x="{left - 6}" y="{_fmt(y(value) + 4)}" text-anchor="end" fill="#667">{value:.3g}</text>')
    for k in range(5):
        step = x_min + (x_max - x_min) * k / 4
        parts.append(f'<text x="{_fmt(x(step))}" y="{height - 14}" text-anchor="middle" fill="#667">{step:.0f}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 2}" text-anchor="middle" fill="#667">step</text>')
    for s in series:
        coords = " ".join(f"{_fmt(x(a))},{_fmt(y(b))}" for a, b in s["points"])
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{s["color"]}" stroke-width="1.6"/>')
        if s.get("markers"):
            parts += [f'<circle cx="{_fmt(x(a))}" cy="{_fmt(y(b))}" r="3" fill="{s["color"]}"><title>step {a}: {b:.4f}</title></circle>' for a, b in s["points"]]
    parts.append("</svg>")
    return "".join(parts)


def forgetting_chart(baseline: float, tuned: float, threshold: float, width: int = 420) -> str:
    """Two vertical bars (general-text perplexity before/after) and the flagging line."""
    height, left, bottom, top = 220, 56, 30, 20
    limit = baseline * (1 + threshold)
    y_max = max(baseline, tuned, limit) * 1.15
    y = lambda v: top + (height - top - bottom) * (1 - v / y_max)  # noqa: E731
    parts = [_svg_open(width, height, "General-text perplexity before and after fine-tuning")]
    flagged = tuned > limit
    for i, (name, value, color) in enumerate((("base", baseline, BASE_COLOR), ("tuned", tuned, FLAG_COLOR if flagged else TUNED_COLOR))):
        bx = left + 40 + i * 130
        parts.append(f'<rect x="{bx}" y="{_fmt(y(value))}" width="80" height="{_fmt(y(0) - y(value))}" fill="{color}"/>')
        parts.append(f'<text x="{bx + 40}" y="{_fmt(y(value) - 5)}" text-anchor="middle" fill="#222">{value:.2f}</text>')
        parts.append(f'<text x="{bx + 40}" y="{height - 10}" text-anchor="middle" fill="#222">{name}</text>')
    parts.append(f'<line x1="{left}" y1="{_fmt(y(limit))}" x2="{width - 10}" y2="{_fmt(y(limit))}" stroke="{FLAG_COLOR}" stroke-dasharray="5,4"/>')
    parts.append(f'<text x="{width - 12}" y="{_fmt(y(limit) - 4)}" text-anchor="end" fill="{FLAG_COLOR}" font-size="11">flag above +{threshold:.0%}</text>')
    parts.append(f'<line x1="{left}" y1="{_fmt(y(0))}" x2="{width - 10}" y2="{_fmt(y(0))}" stroke="#999"/>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_open(width: int, height: int, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" {FONT}><title>{escape(title)}</title>')


def _legend(items: list[tuple[str, str]], x: int, y: int) -> str:
    parts = []
    for name, color in items:
        parts.append(f'<rect x="{x}" y="{y - 9}" width="12" height="10" fill="{color}"/>'
                     f'<text x="{x + 16}" y="{y}" fill="#333">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    return "".join(parts)
