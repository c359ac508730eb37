"""The comparison report: JSON numbers, a self-contained HTML page that renders in a real
browser, the overfitting flag, and `hone compare` / `hone eval` end to end on a tiny model."""

import json
import os
import re
import shutil
import subprocess

import pytest
import torch

from eval_fixtures import general_text, make_adapter_run, synthetic_results, write_curves
from hone.cli import main
from hone.config import EvalArgs
from hone.eval.compare import build_report, format_comparison_table
from hone.eval.curves import check_overfitting, read_curves
from hone.eval.report import build_html, write_report


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra threads only wait on a busy machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    write_curves(run / "metrics.jsonl", overfit=True)
    examples, base, tuned = synthetic_results()
    report = build_report(base, tuned, examples, "demo/eval.jsonl", EvalArgs(bootstrap_samples=500), run, run / "general.txt", None)
    out = tmp_path_factory.mktemp("report")
    write_report(report, out)
    return report, out


def test_report_numbers(synthetic_report):
    report, out = synthetic_report
    saved = json.loads((out / "report.json").read_text())
    assert saved["baseline"]["field_exact_match"] == pytest.approx(report["baseline"]["field_exact_match"])
    for side in ("baseline", "tuned"):
        assert {"eval_loss", "perplexity", "json_valid", "field_exact_match", "exact_match", "field.product"} <= set(saved[side])
    d = saved["deltas"]["field_exact_match"]
    assert d["significant"] and d["ci_low"] > 0 and d["wins"] > d["losses"]
    assert saved["forgetting"]["relative_change"] == pytest.approx(0.025) and not saved["forgetting"]["flagged"]
    assert saved["overfitting"]["flagged"]
    assert saved["examples"]["improved"] and len(saved["predictions"]) == 40
    table = format_comparison_table(saved)
    assert "field_exact_match" in table and "Tuned is better" in table


def test_html_is_self_contained_and_carries_the_numbers(synthetic_report):
    report, out = synthetic_report
    html = (out / "report.html").read_text()
    assert html == build_html(report)
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=|url\(|@import""", html)  # nothing fetched from anywhere
    assert html.count("<svg") >= 4  # scores, change, forgetting, curves
    d = report["deltas"]["field_exact_match"]
    assert f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" in html
    assert "&lt;b&gt;" in html  # user text is escaped, not rendered


def test_overfitting_flag(tmp_path):
    write_curves(tmp_path / "metrics.jsonl", overfit=True)
    assert check_overfitting(read_curves(tmp_path)).flagged
    write_curves(tmp_path / "metrics.jsonl", overfit=False)
    assert not check_overfitting(read_curves(tmp_path)).flagged
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0, "eval_loss": 2.1}\n')
    assert not check_overfitting(read_curves(tmp_path)).flagged


def chromium_binary():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def render_in_chromium(page, tmp_path):
    """(screenshot path, console error lines) from headless Chromium."""
    binary = chromium_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed but CI is set: `apt-get install -y chromium`")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    shot = tmp_path / "shot.png"
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
               "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if "Uncaught" in line or ("CONSOLE" in line and "error" in line.lower())]
    return shot, errors


def test_report_renders_in_headless_chromium(synthetic_report, tmp_path):
    _, out = synthetic_report
    shot, errors = render_in_chromium(out / "report.html", tmp_path)
    assert shot.is_file() and shot.stat().st_size > 30_000  # a blank 1200x1600 page is a few KB
    assert errors == []
    keep = os.environ.get("HONE_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, keep)


def test_console_error_detection_is_not_vacuous(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body>x<script>undefinedFunction()</script></body></html>")
    _, errors = render_in_chromium(page, tmp_path)
    assert any("Uncaught" in line for line in errors)


@pytest.fixture(scope="module")
def tiny_task(tiny_llama, tmp_path_factory):
    from tiny import make_chat_data

    folder = tmp_path_factory.mktemp("task")
    make_adapter_run(tiny_llama, folder / "run")
    return folder / "run", make_chat_data(folder / "eval.jsonl", n=10), general_text(folder / "general.txt.gz")


def test_compare_end_to_end(tiny_task, tmp_path, capsys):
    run, data, general = tiny_task
    out = tmp_path / "report"
    code = main(["compare", "--tuned", str(run), "--data", str(data), "--general", str(general), "--out", str(out),
                 "--max-new-tokens", "6", "--dtype", "float32"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "eval_loss" in printed and "report.html" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["tuned"]["kind"] == "adapter" and report["data"]["examples"] == 10
    assert report["baseline"]["eval_loss"] != report["tuned"]["eval_loss"]  # the adapter changes the model
    assert report["forgetting"]["tokens"] > 0 and report["curves"]["eval"]
    assert (out / "report.html").stat().st_size > 5_000


def test_eval_end_to_end_with_limit_and_json(tiny_task, tmp_path, capsys):
    run, data, _ = tiny_task
    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--data", str(data), "--limit", "4", "--max-new-tokens", "4", "--json", str(out), "--dtype", "float32"]) == 0
    saved = json.loads(out.read_text())
    assert saved["kind"] == "adapter" and len(saved["predictions"]) == 4
    assert saved["metrics"]["n_examples"] == 4 and "token_f1" in capsys.readouterr().out


def test_compare_without_data_is_a_clear_error(tiny_llama, tmp_path, capsys):
    assert main(["compare", "--tuned", str(tiny_llama), "--base", str(tiny_llama)]) == 2
    assert "no evaluation data given" in capsys.readouterr().err


def test_judge_scores_both_orders_so_swapping_sides_mirrors_the_preference(tiny_llama, tmp_path):
    from tiny import make_chat_data

    from hone.data.dataset import read_examples
    from hone.eval.judge import judge_pairwise

    examples = read_examples(make_chat_data(tmp_path / "j.jsonl", n=3)).examples
    first, second = ["cat", "dog", "yes"], ['{"a": 1}', "no", "blue"]
    forward = judge_pairwise(str(tiny_llama), examples, first, second)
    backward = judge_pairwise(str(tiny_llama), examples, second, first)
    assert 0.0 <= forward["tuned_preference"] <= 1.0 and forward["n"] == 3
    assert forward["tuned_preference"] == pytest.approx(1 - backward["tuned_preference"], abs=1e-5)
    assert forward["first_position_bias"] == pytest.approx(backward["first_position_bias"], abs=1e-5)
