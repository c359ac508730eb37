"""`hone ui`: the HTTP API without a browser (fast), then the whole path clicked through in
headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium; nothing
downloads a browser): demo data -> findings -> fix -> advice and plan -> a short training run
on the embedded model, stopped with SIGINT and resumed -> the live chart -> the comparison ->
base and tuned answering the same prompt. Screenshots of each tab go to `tmp_path/screenshots`
(or to $HONE_UI_SCREENSHOTS, e.g. docs/ui, to refresh the README's copies)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

import pytest
import uvicorn
import yaml

from hone.cli import main
from hone.config import RunConfig, load_config
from hone.data.render import render_generation_prompt
from hone.errors import HoneError
from hone.model.generate import GenerationArgs, generate_answers
from hone.eval.models import load_for_eval
from hone.ui import forms
from hone.ui.app import create_app
from hone.ui.chat import TokenStream
from hone.ui.data import demo_prompt
from hone.ui.server import check_auth

DEMO = Path(__file__).resolve().parent.parent / "src" / "hone" / "assets" / "demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """The app served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, runs_dir: Path, auth: str | None = None):
        self.app = create_app(runs_dir, auth)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def call(self, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            text = exc.read()
            return exc.code, json.loads(text) if text.startswith(b"{") else {"text": text.decode()}

    def close(self) -> None:
        self.app.state.ui.runs.stop_all(wait_s=20)
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    served = Served(tmp_path_factory.mktemp("ui") / "runs")
    yield served
    served.close()


# ---- the API, no browser ------------------------------------------------------------------

def test_config_form_is_generated_from_the_dataclasses():
    schema = {section["section"]: {f["name"]: f for f in section["fields"]} for section in forms.config_schema()}
    for spec in dataclasses.fields(RunConfig):
        keys = {f.name for f in dataclasses.fields(getattr(RunConfig(), spec.name))}
        assert set(schema[spec.name]) == keys, f"section {spec.name}: the form must show every key"
    assert schema["model"]["trust_remote_code"]["kind"] == "bool" and "Python code" in schema["model"]["trust_remote_code"]["doc"]
    assert schema["data"]["overlength"] == {**schema["data"]["overlength"], "kind": "choice", "choices": ["drop", "truncate"]}
    assert schema["train"]["max_steps"]["nullable"] and schema["train"]["max_steps"]["range"] == ">= 1"
    assert "lora" in schema["adapter"]["method"]["suggestions"]

    @dataclasses.dataclass
    class Toy:  # a key added to a config section appears in the form with its doc
        rate: float | None = None
        """How fast."""
        mode: Literal["a", "b"] = "a"
        names: list[str] = dataclasses.field(default_factory=list)

    toy = {f["name"]: f for f in forms.fields_of(Toy, "toy.")}
    assert (toy["rate"]["kind"], toy["rate"]["nullable"], toy["rate"]["doc"]) == ("float", True, "How fast.")
    assert toy["mode"]["choices"] == ["a", "b"] and toy["names"]["kind"] == "list" and toy["names"]["key"] == "toy.names"


def test_yaml_follows_the_form_and_errors_are_the_clis_lines(served):
    status, out = served.call("/api/config", {"values": {"train.max_steps": 5, "adapter.lora_rank": 8, "data.train": "x.jsonl"}})
    assert status == 200 and out["yaml"] == "train:\n  max_steps: 5\ndata:\n  train: x.jsonl\n"  # defaults left out
    assert load_config(None, base=yaml.safe_load(out["yaml"])).train.max_steps == 5
    status, out = served.call("/api/config", {"values": {"train.max_steps": "five"}})
    with pytest.raises(HoneError) as cli:
        load_config(None, ["train.max_steps=five"])
    assert status == 400 and out["error"] == cli.value.line()
    status, out = served.call("/api/config/parse", {"yaml": "train:\n  max_steps: 3\n  bad"})
    assert status == 400 and "line 3" in out["error"]
    status, out = served.call("/api/config/parse", {"yaml": "train:\n  max_steps: 3\nadapter:\n  lora_rank: 4\n"})
    assert out["values"] == {"train.max_steps": 3, "adapter.lora_rank": 4}


def test_data_doctor_findings_rows_truncation_and_fix(served):
    _, files = served.call("/api/data/demo", {"planted": True})
    status, view = served.call("/api/data/check", {"train": files["train"], "eval": files["eval"], "max_length": 256})
    assert status == 200
    kinds = {f["kind"] for f in view["findings"]}
    assert {"invalid_json", "empty_content", "role_order", "duplicate", "pii", "too_long"} <= kinds
    broken = next(f for f in view["findings"] if f["kind"] == "invalid_json")
    line = broken["rows"][0]
    assert broken["shown"][0]["text"].rstrip("\n") == Path(files["train"]).read_text().splitlines()[line - 1]
    cut = next(r for r in view["truncation"] if r["chosen"])
    assert cut["max_length"] == 256 and cut["drop"]["dropped"] == 1  # the planted over-long ticket
    shorter = [r for r in view["truncation"] if r["max_length"] < 256]
    assert shorter and all(r["drop"]["lost_trained_tokens"] >= r["truncate"]["lost_trained_tokens"] for r in shorter)
    assert sum(view["stats"]["train"]["lengths"]["histogram"]["counts"]) == view["stats"]["train"]["lengths"]["count"]
    status, fixed = served.call("/api/data/fix", {"train": files["train"], "eval": files["eval"], "max_length": 256, "out": view["fixed_path"]})
    assert status == 200 and fixed["kept"] + fixed["rejected_rows"] == fixed["rows_read"] == 206
    reasons = [json.loads(l)["reason"] for l in Path(fixed["rejected"]).read_text().splitlines()]
    assert len(reasons) == fixed["rejected_rows"] and any(r.startswith("duplicate") for r in reasons)


def test_a_missing_file_or_a_failed_run_is_one_line_and_the_server_keeps_working(served, tmp_path):
    status, out = served.call("/api/data/check", {"train": str(tmp_path / "nope.jsonl")})
    assert status == 400 and out["error"].startswith("data file not found") and "\n" not in out["error"]
    status, out = served.call("/api/data/check", {"train": ""})
    assert status == 400
    run = tmp_path / "failing"
    status, started = served.call("/api/train/start", {"values": {"train.output_dir": str(run), "data.train": str(tmp_path / "nope.jsonl")}})
    assert status == 200 and started["state"] == "running"
    deadline = time.time() + 60
    while (state := served.call(f"/api/run?run={run}")[1])["state"] == "running" and time.time() < deadline:
        time.sleep(0.3)
    assert state["state"] == "failed" and "nope.jsonl" in state["error"] and "\n" not in state["error"]
    assert served.call("/api/state")[0] == 200
    status, out = served.call("/api/train/stop", {"run": str(run)})
    assert status == 400 and "not running" in out["error"]


def test_binds_loopback_and_needs_auth_when_exposed(tmp_path, capsys):
    check_auth("127.0.0.1", None)
    check_auth("::1", None)
    with pytest.raises(HoneError, match="--auth"):
        check_auth("0.0.0.0", None)
    with pytest.raises(HoneError, match="USER:PASS"):
        check_auth("0.0.0.0", "nopassword")
    assert main(["ui", "--host", "0.0.0.0", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hone: error: --host 0.0.0.0 exposes") and "\n" not in err
    served = Served(tmp_path / "runs", auth="alice:secret")
    try:
        assert served.call("/api/state")[0] == 401
        token = base64.b64encode(b"alice:secret").decode()
        assert served.call("/api/state", headers={"Authorization": f"Basic {token}"})[0] == 200
        wrong = base64.b64encode(b"alice:guess").decode()
        assert served.call("/api/state", headers={"Authorization": f"Basic {wrong}"})[0] == 401
    finally:
        served.close()


def test_streamed_answer_is_the_batched_generation():
    """The Chat tab's token-by-token decoding (own KV cache per model) answers exactly what
    hone's batched `generate_answers` answers, greedy, for the same rendered prompt."""
    loaded = load_for_eval("embedded")
    turn = demo_prompt(3)
    messages = [{"role": "system", "content": turn["system"]}, {"role": "user", "content": turn["prompt"]}]
    stream = TokenStream(loaded, messages, max_new_tokens=20, temperature=0.0, top_p=1.0, seed=0)
    text = ""
    while not stream.done:
        text += stream.step()
    prompt = render_generation_prompt(loaded.tokenizer, messages)
    batched = generate_answers(loaded.model, loaded.tokenizer, [prompt], GenerationArgs(max_new_tokens=20))[0]
    assert text and text.strip() == batched.text
    assert len(stream.generated) + int(batched.stopped) == batched.new_tokens  # the stop token is not shown


# ---- the whole path in a real browser -----------------------------------------------------

def browser():
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        if os.environ.get("CI"):
            pytest.fail("chromium/chromium-driver not installed but CI is set: `apt-get install -y chromium chromium-driver`")
        pytest.skip("chromium and chromium-driver not installed (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100", "--disable-gpu"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)  # the system driver: nothing downloaded


class Page:
    def __init__(self, driver, shots: Path):
        from selenium.webdriver.common.by import By

        self.driver, self.by, self.shots = driver, By, shots
        self.times: dict[str, float] = {}

    def find(self, css: str):
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def click(self, element_id: str) -> None:
        self.find(f"#{element_id}").click()

    def tab(self, name: str) -> None:
        self.find(f'nav button[data-tab="{name}"]').click()

    def wait(self, condition, what: str, timeout: float = 240):
        deadline = time.time() + timeout
        while time.time() < deadline:
            errors = [e.text for e in self.driver.find_elements(self.by.CSS_SELECTOR, ".tab.active .error") if e.text]
            try:
                result = condition()
            except Exception:  # the element is being redrawn
                result = None
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; errors on the page: {errors}")

    def set_field(self, key: str, value: str) -> None:
        from selenium.webdriver.common.keys import Keys

        field = self.find(f'#config-form [data-key="{key}"]')
        self.driver.execute_script("arguments[0].closest('details').open = true", field)  # as a user unfolds the section
        field.clear()
        field.send_keys(value, Keys.TAB)  # TAB fires `change`, as a user leaving the field does

    def shot(self, name: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))


@pytest.mark.slow
def test_the_whole_path_in_headless_chromium(tmp_path):
    driver = browser()
    served = Served(tmp_path / "runs")
    page = Page(driver, Path(os.environ.get("HONE_UI_SCREENSHOTS") or tmp_path / "screenshots"))
    try:
        walk_data(page, served)
        walk_plan(page)
        run = walk_train(page, served)
        walk_compare(page, run)
        walk_chat(page)
        print("\nstep timings (s):", json.dumps({k: round(v, 1) for k, v in page.times.items()}))
    finally:
        driver.quit()
        served.close()


def timed(page: Page, name: str, started: float) -> None:
    page.times[name] = time.perf_counter() - started


def walk_data(page: Page, served: Served) -> None:
    started = time.perf_counter()
    page.driver.get(served.url)
    page.wait(lambda: page.find('#config-form [data-key="train.max_steps"]'), "the config form")
    timed(page, "open the page", started)
    started = time.perf_counter()
    page.click("demo-planted")
    table = page.wait(lambda: page.find("#findings-table"), "the findings")
    assert "invalid_json" in table.text and "duplicate" in table.text and "pii" in table.text
    assert page.find("#histogram-svg") and "truncate" in page.find("#truncation").text
    timed(page, "load the demo data and see the findings", started)
    page.shot("1-data")
    started = time.perf_counter()
    page.click("fix")
    assert "rejected" in page.wait(lambda: page.find("#fix-result").text, "the fixed file")
    page.click("use-data")
    timed(page, "write the fixed file and use it", started)


def walk_plan(page: Page) -> None:
    started = time.perf_counter()
    page.tab("plan")
    page.find("#plan-calibrate").click()  # untick: the plan answers at once (memory and GPUs)
    from selenium.webdriver.support.select import Select

    Select(page.find('[data-answer="goal"]')).select_by_value("format")
    assert page.find('[data-answer="n_examples"]').get_attribute("value").endswith(".fixed.jsonl")  # the chosen data, counted
    page.click("advise")
    assert "fine-tuning" in page.wait(lambda: page.find("#recommendation").text, "the advice")
    assert "trainable" in page.wait(lambda: page.find("#plan-headline").text, "the plan")
    timed(page, "advice and plan", started)
    page.shot("2-plan")


def walk_train(page: Page, served: Served) -> str:
    started = time.perf_counter()
    page.tab("train")
    for key, value in {"data.eval": "", "data.max_eval_examples": "4", "data.max_length": "256", "train.max_steps": "30", "train.batch_size": "2",
                       "train.eval_every": "6", "train.save_every": "1000", "train.learning_rate": "0.003",
                       "eval.limit": "2", "eval.max_new_tokens": "16", "eval.general_max_tokens": "256",
                       "eval.bootstrap_samples": "50"}.items():
        page.set_field(key, value)
    page.wait(lambda: "max_steps: 30" in page.find("#yaml").get_attribute("value"), "the YAML beside the form")
    page.click("start")
    run = Path(page.wait(lambda: served.call("/api/runs")[1]["runs"], "the run listed")[0]["run"])
    page.wait(lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text(), "the first step", timeout=300)
    page.click("stop")  # SIGINT, as Ctrl-C: the loop saves a checkpoint at the next step boundary
    page.wait(lambda: page.find("#run-state").text == "stopped", "the run to stop")
    points = lambda: int(page.find("#loss-chart").get_attribute("data-points"))  # noqa: E731
    stopped_at = points()
    assert 1 <= stopped_at < 30 and list((run / "checkpoints").glob("step-*")), "stop must leave a checkpoint"
    timed(page, "start a run, see the chart, stop it", started)
    started = time.perf_counter()
    page.click("resume")
    page.wait(lambda: page.find("#run-state").text == "finished", "the resumed run to finish and compare", timeout=900)
    assert points() == 30 and int(page.find("#loss-chart").get_attribute("data-eval-points")) >= 5
    assert "resume" in (run / "ui.log").read_text()
    timed(page, "resume to the end (with the comparison)", started)
    page.shot("3-train")
    return str(run)


def walk_compare(page: Page, run: str) -> None:
    started = time.perf_counter()
    page.tab("compare")
    page.wait(lambda: page.find("#compare-picks input:checked"), "the run ticked")
    page.click("compare-selected")
    table = page.wait(lambda: page.find("#side-by-side-table"), "the side-by-side table")
    assert "eval_loss" in table.text and Path(run).name in table.text
    page.driver.switch_to.frame(page.find("#report"))
    assert page.wait(lambda: page.driver.find_elements(page.by.TAG_NAME, "table"), "the report in its frame")
    page.driver.switch_to.default_content()
    timed(page, "open the comparison", started)
    page.shot("4-compare")


def walk_chat(page: Page) -> None:
    started = time.perf_counter()
    page.tab("chat")
    page.wait(lambda: page.find("#chat-runs input:checked"), "the tuned run ticked")
    page.click("chat-example")
    page.wait(lambda: page.find("#chat-prompt").get_attribute("value"), "the example prompt")
    max_tokens = page.find("#chat-max")
    max_tokens.clear()
    max_tokens.send_keys("24")
    page.click("chat-send")
    page.wait(lambda: page.find("#answer-0-info").text and page.find("#answer-1-info").text, "both answers")
    base, tuned = page.find("#answer-0").text, page.find("#answer-1").text
    assert base and tuned
    timed(page, "chat with base and tuned", started)
    page.shot("5-chat")
