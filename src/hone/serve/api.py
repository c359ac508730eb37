"""The HTTP side of `hone serve` (FastAPI): OpenAI's `/v1/chat/completions` (streamed as
server-sent events or not), `/v1/completions` and `/v1/models`, and `/health`.

Handlers validate, render the prompt exactly as training rendered it, hand one engine request
per prompt to the scheduler thread and relay its events. Nothing a client sends can end the
server: every refusal is OpenAI's error body with a 4xx status.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from hone.data.render import RenderError, render_generation_prompt
from hone.serve.engine import Params, QueueFull, Request, Scheduler
from hone.serve.models import Served, ServedModel
from hone.serve.protocol import ApiError, ChatRequest, CompletionRequest, Sampling, error_response
from hone.serve.schema import JsonConstraint, SchemaError, TokenIndex, compile_schema


def create_app(served: Served, scheduler: Scheduler, api_key: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        yield
        scheduler.stop()

    app = FastAPI(title="hone serve", lifespan=lifespan)
    handler = Handler(served, scheduler)
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)
    app.add_exception_handler(ApiError, lambda request, exc: exc.response())
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, lambda request, exc: error_response(exc.status_code, str(exc.detail)))
    app.add_exception_handler(Exception, lambda request, exc: error_response(500, f"{type(exc).__name__}: {exc}", kind="server_error"))

    app.get("/health")(lambda: {"status": "ok", **scheduler.load()})
    app.get("/v1/models")(handler.list_models)
    app.post("/v1/chat/completions")(handler.chat)
    app.post("/v1/completions")(handler.complete)
    return app


class BearerAuth:
    """Every /v1 request must carry `Authorization: Bearer KEY` (a plain ASGI layer, so the key
    is checked before the body is read)."""

    def __init__(self, app, api_key: str):
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = error_response(401, "missing or wrong API key: send the header `Authorization: Bearer KEY`",
                                          code="invalid_api_key")
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


async def validation_error(request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return error_response(400, f"the request body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])})",
                              code="invalid_json")
    # pydantic names the member of a union it tried (prompt.str, prompt.list[int]): the field is enough
    param = ".".join(str(part) for part in first["loc"] if part != "body" and str(part) not in UNION_MEMBERS
                     and "[" not in str(part)) or None
    if param is None:
        return error_response(400, "the request body must be a JSON object (Content-Type: application/json)",
                              code=first["type"])
    got = f" (got {json.dumps(first['input'], default=repr)[:80]})" if "input" in first and first["type"] != "missing" else ""
    return error_response(400, f"{param}: {first['msg']}{got}", param, first["type"])


UNION_MEMBERS = {"str", "int", "float", "bool", "dict", "list"}


class CancellingStream(StreamingResponse):
    """A streamed answer whose engine requests are cancelled however the stream ends, the
    client leaving mid-answer included: their rows leave the batch at the next step."""

    def __init__(self, content, requests: list[Request]):
        super().__init__(content, media_type="text/event-stream")
        self.requests = requests

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            for request in self.requests:
                request.cancel()


class Handler:
    def __init__(self, served: Served, scheduler: Scheduler):
        self.served, self.scheduler = served, scheduler
        self.indexes: dict[int, TokenIndex] = {}

    async def list_models(self):
        data = [{"id": m.id, "object": "model", "created": self.served.created, "owned_by": "hone", "root": m.root,
                 "parent": m.parent, "max_model_len": self.served.context_length} for m in self.served.models.values()]
        return {"object": "list", "data": data}

    async def chat(self, body: ChatRequest):
        entry = self.find(body.model)
        if body.tools:
            raise ApiError(400, "hone serve does not call tools (no tool-call parsing yet): send the request without `tools`", "tools")
        try:
            prompt = render_generation_prompt(entry.tokenizer, [m.as_template_message() for m in body.messages])
        except RenderError as exc:
            raise ApiError(400, f"cannot render these messages with the model's chat template: {exc}", "messages") from None
        return await self.respond(body, entry, [prompt], "messages", body.max_completion_tokens or body.max_tokens, chat=True)

    async def complete(self, body: CompletionRequest):
        entry = self.find(body.model)
        if body.echo:
            raise ApiError(400, "echo is not supported", "echo")
        prompts = self.completion_prompts(body.prompt, entry)
        return await self.respond(body, entry, prompts, "prompt", body.max_tokens, chat=False)

    def completion_prompts(self, prompt, entry: ServedModel) -> list[list[int]]:
        """Token ids of each prompt: text (tokenized as training tokenized completions) or ids."""
        prompts = [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else prompt
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ApiError(400, "prompt is empty", "prompt")
        ids = [entry.tokenizer(p, add_special_tokens=True)["input_ids"] if isinstance(p, str) else list(p) for p in prompts]
        vocab = len(entry.tokenizer)
        if any(not 0 <= token < vocab for row in ids for token in row):
            raise ApiError(400, f"prompt holds a token id outside the vocabulary [0, {vocab})", "prompt")
        return ids

    def find(self, name: str) -> ServedModel:
        if name not in self.served.models:
            raise ApiError(404, f"the model `{name}` does not exist; served: {', '.join(self.served.models)}",
                           "model", "model_not_found")
        return self.served.models[name]

    async def respond(self, body: Sampling, entry: ServedModel, prompts: list[list[int]], prompt_param: str,
                      max_tokens: int | None, chat: bool):
        if body.logprobs:
            raise ApiError(400, "logprobs are not supported", "logprobs")
        params = [await self.params(body, entry, prompt, prompt_param, max_tokens) for prompt in prompts]
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        requests = []
        for number, (prompt, param) in enumerate(zip(prompts, params)):
            offset = number * body.n  # choices of prompt k are numbered k*n .. k*n + n-1
            emit = (lambda off: lambda event: loop.call_soon_threadsafe(events.put_nowait, _shift(event, off)))(offset)
            requests.append(Request(entry.id, prompt, param, body.n, emit))
        try:
            for request in requests:
                self.scheduler.submit(request)
        except QueueFull as exc:
            for request in requests:
                request.cancel()
            raise ApiError(429, f"the server is busy: {exc}; retry shortly", None, "queue_full", "rate_limit_error") from None
        meta = Meta(entry.id, chat, sum(len(p) for p in prompts) * body.n, len(requests) * body.n)
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return CancellingStream(stream_events(events, meta, usage), requests)
        try:
            return await collect(events, meta)
        finally:
            for request in requests:
                request.cancel()

    async def params(self, body: Sampling, entry: ServedModel, prompt: list[int], prompt_param: str,
                     max_tokens: int | None) -> Params:
        room = self.served.context_length - len(prompt)
        if room <= 0:
            raise ApiError(400, f"the prompt is {len(prompt)} tokens; the model's context is {self.served.context_length}",
                           prompt_param, "context_length_exceeded")
        if max_tokens is not None and max_tokens > room:
            raise ApiError(400, f"max_tokens={max_tokens} does not fit: the prompt is {len(prompt)} tokens of a "
                           f"{self.served.context_length}-token context, leaving {room}", "max_tokens", "context_length_exceeded")
        constraint = await self.constraint(body, entry)
        return Params(max_tokens=max_tokens or room, temperature=body.temperature, top_p=body.top_p, seed=body.seed,
                      stop=body.stops(), constraint=constraint)

    async def constraint(self, body: Sampling, entry: ServedModel):
        fmt = body.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.json_schema is None:
            raise ApiError(400, "response_format of type json_schema needs `json_schema`", "response_format.json_schema")
        try:
            node = compile_schema(fmt.json_schema.schema_)
        except SchemaError as exc:
            raise ApiError(400, f"unsupported JSON schema: {exc}", "response_format.json_schema.schema", "unsupported_schema") from None
        key = id(entry.tokenizer)
        if key not in self.indexes:  # built once per tokenizer, off the event loop
            vocab = self.served.model.get_output_embeddings().weight.shape[0]
            self.indexes[key] = await run_in_threadpool(TokenIndex, entry.tokenizer, vocab)
        index = self.indexes[key]
        return lambda: JsonConstraint(node, index, entry.stop_ids)


def _shift(event: tuple, offset: int) -> tuple:
    return event if event[0] == "error" else (event[0], event[1] + offset, *event[2:])


class Meta:
    """What every response object of one request repeats."""

    def __init__(self, model: str, chat: bool, prompt_tokens: int, choices: int):
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.model, self.chat, self.prompt_tokens, self.choices = model, chat, prompt_tokens, choices
        self.created = int(time.time())
        self.completion_tokens = 0

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def envelope(self, choices: list[dict], chunk: bool) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}


async def collect(events: asyncio.Queue, meta: Meta) -> dict:
    texts, reasons = [""] * meta.choices, [None] * meta.choices
    while any(reason is None for reason in reasons):
        event = await events.get()
        if event[0] == "error":
            raise ApiError(500, f"generation failed: {event[1]}", kind="server_error")
        if event[0] == "delta":
            texts[event[1]] += event[2]
        else:
            reasons[event[1]] = event[2]
            meta.completion_tokens += event[3]
    if meta.chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reason, "logprobs": None}
                   for i, (text, reason) in enumerate(zip(texts, reasons))]
    else:
        choices = [{"index": i, "text": text, "finish_reason": reason, "logprobs": None}
                   for i, (text, reason) in enumerate(zip(texts, reasons))]
    return {**meta.envelope(choices, chunk=False), "usage": meta.usage()}


async def drain(events: asyncio.Queue) -> list[tuple]:
    """The next event and every one already queued behind it: when the client or this loop falls
    behind the decoding steps, several tokens of a choice go out in one chunk, not one each."""
    batch = [await events.get()]
    while not events.empty():
        batch.append(events.get_nowait())
    return batch


async def stream_events(events: asyncio.Queue, meta: Meta, include_usage: bool):
    """Server-sent events: a chunk per piece of text, one per finished choice, then [DONE]."""
    def chunk(index: int, text: str | None, reason: str | None, first: bool = False) -> str:
        if meta.chat:
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text is not None else {})
            choice = {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": index, "text": text or "", "finish_reason": reason, "logprobs": None}
        return f"data: {json.dumps(meta.envelope([choice], chunk=True))}\n\n"

    if meta.chat:
        for index in range(meta.choices):
            yield chunk(index, None, None, first=True)
    left = meta.choices
    while left:
        pending: dict[int, str] = {}  # text per choice not sent yet
        for event in await drain(events):
            if event[0] == "error":
                yield f"data: {json.dumps({'error': {'message': f'generation failed: {event[1]}', 'type': 'server_error', 'param': None, 'code': None}})}\n\n"
                return
            if event[0] == "delta":
                pending[event[1]] = pending.get(event[1], "") + event[2]
                continue
            if event[1] in pending:
                yield chunk(event[1], pending.pop(event[1]), None)
            left -= 1
            meta.completion_tokens += event[3]
            yield chunk(event[1], None, event[2])
        for index, text in pending.items():
            yield chunk(index, text, None)
    if include_usage:
        yield f"data: {json.dumps({**meta.envelope([], chunk=True), 'usage': meta.usage()})}\n\n"
    yield "data: [DONE]\n\n"
