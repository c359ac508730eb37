"""`hone ui`'s HTTP API and page: FastAPI routes over hone's own functions (the data doctor,
the advisor, the plan, `hone train` processes, the comparison report, generation).

Every failure a user can cause (a broken config, a missing file, a failed run) answers with
the CLI's one-line error as `{"error": "..."}` and a 4xx status; the server keeps running.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from hone.errors import HoneError
from hone.model.load import EMBEDDED_MODEL
from hone.pipeline import check_tokenizer
from hone.plan.advise import advise
from hone.plan.estimate import plan_run
from hone.ui import forms
from hone.ui.chat import Models, stream_chat
from hone.ui.compare import compare_runs, read_report
from hone.ui.data import check_view, demo_files, demo_prompt, fix_file, planted_demo, save_upload
from hone.ui.runs import Runs, read_metrics, report_dir

STATIC = Path(__file__).resolve().parent / "static"


class Ui:
    """What the page's requests share: the runs folder, the jobs, loaded models, a tokenizer."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = runs_dir
        self.runs = Runs(runs_dir)
        self.models = Models()
        self.tokenizers: dict[str | None, Any] = {}
        self.plan_lock = threading.Lock()  # one plan at a time: a plan times real steps on this CPU
        self.chat_lock = threading.Lock()

    def tokenizer(self, model: str | None):
        if model not in self.tokenizers:
            self.tokenizers[model] = check_tokenizer(model)
        return self.tokenizers[model]


def error_response(exc: Exception, status: int) -> JSONResponse:
    if isinstance(exc, HoneError):
        return JSONResponse({"error": exc.line()}, status_code=status)
    first = str(exc).splitlines()[0] if str(exc) else ""
    return JSONResponse({"error": f"{type(exc).__name__}: {first}"}, status_code=status)


async def body(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HoneError("request body is not JSON", "send a JSON object") from None
    if not isinstance(data, dict):
        raise HoneError("request body is not a JSON object", "send a JSON object")
    return data


def finite(value):
    """NaN and infinity (a time not measured) as null: JSON has no other way to say it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def require_auth(app: FastAPI, credentials: str) -> None:
    """HTTP Basic auth on every path (the browser asks for USER:PASS once)."""
    expected = "Basic " + base64.b64encode(credentials.encode()).decode()

    @app.middleware("http")
    async def check(request: Request, call_next):
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), expected.encode()):
            return Response("authentication required", status_code=401, headers={"WWW-Authenticate": 'Basic realm="hone ui"'})
        return await call_next(request)


def create_app(runs_dir: str | Path = "runs", auth: str | None = None) -> FastAPI:
    ui = Ui(Path(runs_dir))
    app = FastAPI(title="hone ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ui = ui
    if auth:
        require_auth(app, auth)
    app.add_exception_handler(HoneError, lambda request, exc: error_response(exc, 400))
    app.add_exception_handler(Exception, lambda request, exc: error_response(exc, 500))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/")
    def page():
        return FileResponse(STATIC / "index.html")

    add_state_routes(app, ui)
    add_data_routes(app, ui)
    add_plan_routes(app, ui)
    add_train_routes(app, ui)
    add_compare_routes(app, ui)
    add_chat_routes(app, ui)
    return app


def add_state_routes(app: FastAPI, ui: Ui) -> None:
    @app.get("/api/state")
    def state():
        return {"cwd": str(Path.cwd()), "runs_dir": str(ui.runs_dir), "demo": demo_files(),
                "embedded_model": EMBEDDED_MODEL.is_dir(), "config": forms.config_schema(),
                "answers": forms.answers_schema(), "new_run_dir": str(ui.runs_dir / time.strftime("run-%Y%m%d-%H%M%S"))}


def add_data_routes(app: FastAPI, ui: Ui) -> None:
    @app.post("/api/data/demo")
    async def demo(request: Request):
        planted = (await body(request)).get("planted", True)
        files = demo_files()
        if planted:
            files["train"] = str(planted_demo(ui.runs_dir / "data"))
        return files

    @app.post("/api/data/upload")
    async def upload(request: Request, name: str = "upload.jsonl"):
        return {"path": str(save_upload(ui.runs_dir / "data", name, await request.body()))}

    @app.post("/api/data/check")
    async def check(request: Request):
        args = await body(request)
        return check_view(args.get("train") or "", args.get("eval") or None, ui.tokenizer(args.get("model") or None),
                          int(args.get("max_length") or 512), args.get("overlength") or "drop")

    @app.post("/api/data/fix")
    async def fix(request: Request):
        args = await body(request)
        return fix_file(args.get("train") or "", args.get("eval") or None, ui.tokenizer(args.get("model") or None),
                        int(args.get("max_length") or 512), args.get("overlength") or "drop", args["out"])


def add_plan_routes(app: FastAPI, ui: Ui) -> None:
    @app.post("/api/advise")
    async def advice(request: Request):
        result = advise(forms.answers_from_form((await body(request)).get("answers") or {}))
        return {**result.to_dict(), "text": result.text()}

    @app.post("/api/config")
    async def config(request: Request):
        _, text = forms.config_from_form((await body(request)).get("values") or {})
        return {"yaml": text}

    @app.post("/api/config/parse")
    async def parse(request: Request):
        return {"values": forms.values_from_yaml((await body(request)).get("yaml") or "")}

    @app.post("/api/plan")
    async def plan(request: Request):
        args = await body(request)
        config, _ = forms.config_from_form(args.get("values") or {})
        with ui.plan_lock:
            result = plan_run(config, calibrate=bool(args.get("calibrate", True)))
        return {**finite(json.loads(json.dumps(result.to_dict(), default=str))), "text": result.text()}


def add_train_routes(app: FastAPI, ui: Ui) -> None:
    @app.post("/api/train/start")
    async def start(request: Request):
        config, text = forms.config_from_form((await body(request)).get("values") or {})
        return ui.runs.status(ui.runs.start(text, config.train.output_dir))

    @app.post("/api/train/stop")
    async def stop(request: Request):
        run = Path((await body(request)).get("run") or "")
        ui.runs.stop(run)
        return ui.runs.status(run)

    @app.post("/api/train/resume")
    async def resume(request: Request):
        return ui.runs.status(ui.runs.resume(Path((await body(request)).get("run") or "")))

    @app.get("/api/runs")
    def runs():
        return {"runs_dir": str(ui.runs_dir), "runs": ui.runs.listing()}

    @app.get("/api/run")
    def run(run: str, since: int = 0):
        folder = Path(run)
        return {**ui.runs.status(folder), "metrics": read_metrics(folder, max(0, since)), "log": ui.runs.log_tail(folder)}


def add_compare_routes(app: FastAPI, ui: Ui) -> None:
    @app.post("/api/compare/run")
    async def run_compare(request: Request):
        args = await body(request)
        return ui.runs.status(ui.runs.compare(Path(args.get("run") or ""), args.get("limit")))

    @app.get("/api/report")
    def report(run: str):
        return read_report(Path(run))

    @app.get("/report", response_class=HTMLResponse)
    def report_page(run: str):
        folder = report_dir(Path(run))
        if folder is None or not (folder / "report.html").is_file():
            raise HoneError(f"{run} has no report.html yet", "let the run finish (eval.compare=true), or press Compare")
        return HTMLResponse((folder / "report.html").read_text())

    @app.post("/api/compare")
    async def compare(request: Request):
        return {"runs": compare_runs([Path(r) for r in (await body(request)).get("runs") or []])}


def add_chat_routes(app: FastAPI, ui: Ui) -> None:
    @app.get("/api/chat/example")
    def example(index: int = 0):
        return demo_prompt(index)

    @app.post("/api/chat")
    async def chat(request: Request):
        args = await body(request)
        messages = ([{"role": "system", "content": args["system"]}] if args.get("system") else [])
        messages.append({"role": "user", "content": args.get("prompt") or ""})
        settings = {key: args[key] for key in ("max_new_tokens", "temperature", "top_p", "seed") if args.get(key) is not None}
        events = stream_chat(ui.models, list(args.get("runs") or []), args.get("base") or None, messages, **settings)
        return StreamingResponse(sse(events, ui.chat_lock), media_type="text/event-stream")


def sse(events, lock: threading.Lock):
    """Server-sent events; an error mid-stream becomes an `error` event, never a dropped connection."""
    with lock:  # one answer at a time: the models share the CPU
        try:
            for event in events:
                yield f"data: {json.dumps(event)}\n\n"
        except Exception as exc:  # the stream already began: report in-band
            line = exc.line() if isinstance(exc, HoneError) else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            yield f"data: {json.dumps({'error': line})}\n\n"
