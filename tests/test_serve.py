"""`hone serve`: a real server process on the embedded model with two LoRA adapters made here,
driven with the official `openai` client (and raw HTTP where a client would refuse to send)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import openai
import pytest
import torch
from tiny import FAMILIES, make_model

from hone.cli import main
from hone.config import load_config, save_config
from hone.serve import vllm
from hone.serve.command import exposure_warning
from hone.serve.engine import Params, Request, Scheduler
from hone.serve.models import load_served
from hone.serve.schema import JsonConstraint, SchemaError, TokenIndex, compile_schema, feed, feed_text

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "src/hone/assets/demo"
SCHEMA = json.loads((DEMO / "schema.json").read_text())
KEY = "test-key"
TICKET = [json.loads(line) for line in (DEMO / "eval.jsonl").read_text().splitlines()[:1]][0]["messages"][:-1]


def make_adapter(folder: Path, seed: int) -> Path:
    """A LoRA run folder on the embedded model, as `hone train` leaves one, with small random weights."""
    from hone.model.offline import import_adapter_libraries

    import_adapter_libraries()  # PEFT's import of bitsandbytes without a hub request
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = ROOT / "src/hone/assets/base_model"
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():  # random A and B, scaled down so the adapter changes answers without wrecking them
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.5)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    save_config(load_config(None, [f"data.train={DEMO / 'train.jsonl'}", f"train.output_dir={folder}"]), folder / "config.yaml")
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, key: str | None = KEY) -> tuple[int, dict]:
    return post(url, None, key, method="GET")


def post(url: str, data: bytes | None, key: str | None = KEY, method: str = "POST") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    a, b = make_adapter(root / "a", 1), make_adapter(root / "b", 2)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hone", "serve", "embedded", "--adapter", f"a={a}", "--adapter", f"b={b}",
         "--port", str(port), "--api-key", KEY, "--dtype", "float32", "--threads", "1", "--max-batch", "4", "--max-queue", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"hone serve exited: {process.stdout.read()}")
        try:
            if get(f"{url}/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.3)
    yield url, a
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key=KEY, max_retries=0, timeout=120)


def chat(client, model, **kwargs):
    kwargs = {"messages": TICKET, "temperature": 0, "max_tokens": 24, **kwargs}
    return client.chat.completions.create(model=model, **kwargs)


def test_models_lists_the_base_and_each_adapter_with_the_base_as_parent(client):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"embedded", "a", "b"}
    assert models["embedded"].parent is None and models["a"].parent == models["b"].parent == "embedded"


def test_mixed_adapter_batches_answer_as_each_model_alone(client):
    alone = {m: chat(client, m).choices[0].message.content for m in ("embedded", "a", "b")}
    assert len(set(alone.values())) == 3  # the adapters really change the answers
    together: dict[str, str] = {}
    threads = [threading.Thread(target=lambda m=m: together.__setitem__(m, chat(client, m).choices[0].message.content))
               for m in ("embedded", "a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone


def test_adapter_answers_equal_transformers_generate(client, server):
    from hone.model.generate import GenerationArgs, generate_answers
    from hone.eval.models import load_for_eval
    from hone.data.render import render_generation_prompt

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 4M-parameter model's products are too small to share between threads
    try:
        loaded = load_for_eval(str(server[1]), dtype="float32")
        prompt = render_generation_prompt(loaded.tokenizer, TICKET)
        expected = generate_answers(loaded.model, loaded.tokenizer, [prompt], GenerationArgs(max_new_tokens=24))[0]
    finally:
        torch.set_num_threads(threads)
    response = chat(client, "a")
    assert response.choices[0].message.content.strip() == expected.text
    assert response.usage.prompt_tokens == len(prompt)


def test_streamed_answer_equals_the_whole_one_and_reports_usage(client):
    whole = chat(client, "b")
    pieces, usage = [], None
    for chunk in chat(client, "b", stream=True, stream_options={"include_usage": True}):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        else:
            usage = chunk.usage
    assert "".join(pieces) == whole.choices[0].message.content
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_completions_stop_at_a_stop_string(client):
    free = client.completions.create(model="embedded", prompt="The weather today", max_tokens=24, temperature=0)
    text = free.choices[0].text
    stop = text.strip()[3:6]
    cut = client.completions.create(model="embedded", prompt="The weather today", max_tokens=24, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_json_schema_answers_always_parse_and_validate(client):
    response = chat(client, "embedded", temperature=1.0, seed=7, n=4, max_tokens=160,
                    response_format={"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA}})
    for choice in response.choices:  # the base model alone never writes this JSON (README: schema valid 0.000)
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), SCHEMA)


def test_a_seed_repeats_its_sample_and_n_answers_differ(client):
    first = chat(client, "a", temperature=1.0, seed=3, n=2)
    again = chat(client, "a", temperature=1.0, seed=3, n=2)
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices]
    assert texts[0] != texts[1]


def test_bad_requests_get_openai_errors_and_the_server_lives_on(client, server):
    url = server[0]
    status, body = post(f"{url}/v1/chat/completions", b'{"model": "a", "messages": [')
    assert status == 400 and body["error"]["code"] == "invalid_json"
    cases = [  # (request, status, param)
        (dict(model="nope"), 404, "model"),
        (dict(model="a", max_tokens=0), 400, "max_tokens"),
        (dict(model="a", max_tokens=5000), 400, "max_tokens"),
        (dict(model="a", temperature="hot"), 400, "temperature"),
        (dict(model="a", messages=[{"role": "user", "content": "word " * 2000}]), 400, "messages"),
        (dict(model="a", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "a+"}}}),
         400, "response_format.json_schema.schema"),
    ]
    for request, status, param in cases:
        with pytest.raises(openai.APIStatusError) as error:
            chat(client, **request)
        assert error.value.status_code == status and error.value.body["param"] == param
        assert set(error.value.body) == {"message", "type", "param", "code"}
    status, body = post(f"{url}/v1/chat/completions", json.dumps({"model": "a"}).encode())
    assert status == 400 and body["error"]["param"] == "messages"
    form = urllib.request.Request(f"{url}/v1/completions", data=b"model=a", headers={"Authorization": f"Bearer {KEY}"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(form, timeout=60)
    assert error.value.code == 400 and "JSON object" in json.loads(error.value.read())["error"]["message"]
    status, body = post(f"{url}/v1/completions", json.dumps({"model": "a", "prompt": [1, 10**6]}).encode())
    assert status == 400 and body["error"]["param"] == "prompt"
    assert get(f"{url}/health")[0] == 200


def test_every_request_needs_the_key(server):
    for key in (None, "wrong"):
        status, body = get(f"{server[0]}/v1/models", key)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"


def test_full_queue_gets_429_and_a_client_that_leaves_frees_its_rows(client, server):
    url = server[0]
    # four answers fill --max-batch 4; two more fill --max-queue 2; one more is refused
    long = client.completions.create(model="embedded", prompt="Once upon a time", max_tokens=900, temperature=1.0, n=4, stream=True)
    next(iter(long))
    waiting = client.completions.create(model="a", prompt="Hello", max_tokens=4, temperature=0, n=2, stream=True)
    with pytest.raises(openai.RateLimitError) as error:
        client.completions.create(model="b", prompt="Hello", max_tokens=4)
    assert error.value.body["code"] == "queue_full"
    long.close()  # the client leaves mid-stream
    reasons = [None, None]
    for chunk in waiting:  # can only start once the four rows of the abandoned stream are gone
        for choice in chunk.choices:
            reasons[choice.index] = choice.finish_reason or reasons[choice.index]
    assert all(reasons)
    health = get(f"{url}/health")[1]
    assert health["cancelled"] == 4 and health["steps"] < 900


def test_exposure_without_a_key_is_warned_about():
    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("::1", None) is None
    assert exposure_warning("0.0.0.0", "k") is None
    assert "0.0.0.0" in exposure_warning("0.0.0.0", None)


def test_vllm_engine_is_refused_in_one_line_where_it_cannot_run(capsys):
    if vllm.available() is None:
        pytest.skip("vLLM and CUDA are here")
    assert main(["serve", "embedded", "--engine", "vllm"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("hone: error: --engine vllm needs vLLM and a CUDA GPU")


def test_vllm_gets_the_base_and_every_adapter(server):
    argv = vllm.command("embedded", [("a", str(server[1]))], "127.0.0.1", 8001, None)
    assert argv[argv.index("--model") + 1].endswith("base_model") and argv[argv.index("--served-model-name") + 1] == "embedded"
    assert f"a={server[1].resolve()}" in argv and argv[argv.index("--max-lora-rank") + 1] == "8"


# --- the JSON constraint on its own ---

def test_the_automaton_accepts_valid_prefixes_and_only_complete_documents():
    node = compile_schema({"type": "object", "properties": {"n": {"type": "array", "items": {"type": "number"}, "maxItems": 2},
                                                            "k": {"enum": [1, 12, "x"]}, "b": {"type": "boolean"}}, "required": ["n"]})
    start = (("root", node, 0),)

    def complete(text):
        stack = feed_text(start, text)
        return stack is not None and feed(stack, None) is not None

    assert complete('{"n": [1, -2.5e3]}') and complete('{"k":12,"n":[],"b":true}') and complete('{"n":[],"k":"x"}')
    assert not complete('{"n": [1, 2, 3]}') and not complete('{"k": 1}') and not complete('{"n": [], "k": 13}')
    assert feed_text(start, '{"n": [1], "n"') is None  # a key twice
    assert feed_text(start, '{"m"') is None and feed_text(start, '{"n": [01') is None
    for bad in ({"type": "string", "pattern": "a"}, {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": True},
                {"anyOf": []}, {"type": "array"}):
        with pytest.raises(SchemaError):
            compile_schema(bad)


def test_random_tokens_under_the_constraint_always_make_valid_json():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ROOT / "src/hone/assets/base_model")
    index = TokenIndex(tokenizer, 4096)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        constraint, ids = JsonConstraint(compile_schema(SCHEMA), index, [0]), []
        while len(ids) < 400:
            allowed = constraint.mask().nonzero().flatten()
            token = int(allowed[torch.randint(len(allowed), (1,), generator=generator)])
            if token == 0:
                break
            ids.append(token)
            constraint.advance(token)
        jsonschema.validate(json.loads(tokenizer.decode(ids)), SCHEMA)


# --- mixed-adapter batches on every family hone trains ---

@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_batches_mixed_adapters_as_it_answers_alone(tmp_path, family):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = make_model(tmp_path / "base", family)
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
        run = tmp_path / f"run{seed}"
        model.save_pretrained(run)
        save_config(load_config(None, [f"model.path={base}", f"data.train={DEMO / 'train.jsonl'}", f"train.output_dir={run}"]), run / "config.yaml")
        runs.append((f"r{seed}", str(run)))
    served = load_served(str(base), runs, dtype="float32")
    scheduler = Scheduler(served, max_batch=8, threads=1)
    scheduler.start()
    try:
        jobs = [(model, [5 + i, 9, 17, 33 + 7 * i][: 2 + i % 3]) for i, model in enumerate(["base", "r1", "r2", "r1", "base", "r2"])]
        alone = [generate(scheduler, served, *job) for job in jobs]
        together = generate_together(scheduler, served, jobs)
    finally:
        scheduler.stop()
    assert together == alone
    assert len({tuple(ids) for ids in alone[:3]}) == 3  # the adapters change the answer


def generate(scheduler, served, model, prompt):
    return generate_together(scheduler, served, [(model, prompt)])[0]


def generate_together(scheduler, served, jobs):
    """Greedy token ids per job, the jobs submitted at once (so they decode in shared steps)."""
    done = [threading.Event() for _ in jobs]
    ids: list[list[int]] = [[] for _ in jobs]
    requests = []
    for index, (model, prompt) in enumerate(jobs):
        def emit(event, index=index):
            if event[0] == "finish":
                ids[index] = event[4]
            if event[0] != "delta":
                done[index].set()
        requests.append(Request(served.base_id if model == "base" else model, prompt, Params(max_tokens=8, temperature=0), 1, emit))
    for request in requests:
        scheduler.submit(request)
    for event in done:
        assert event.wait(60)
    return ids


def test_joined_adapters_compute_what_peft_mixed_batches_compute(tmp_path, tiny_llama):
    """hone.serve.rows against PEFT's own `adapter_names=` path: ranks 2 and 6, one adapter on the
    attention only, a scale that is not a power of two, rows on the base between them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    runs = []
    for seed, config in ((1, LoraConfig(r=2, lora_alpha=3, target_modules="all-linear", init_lora_weights=False)),
                         (2, LoraConfig(r=6, lora_alpha=5, target_modules=["q_proj", "v_proj"], init_lora_weights=False))):
        torch.manual_seed(seed)
        run = tmp_path / f"run{seed}"
        get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), config).save_pretrained(run)
        save_config(load_config(None, [f"model.path={tiny_llama}", f"data.train={DEMO / 'train.jsonl'}", f"train.output_dir={run}"]), run / "config.yaml")
        runs.append((f"r{seed}", str(run)))
    served = load_served(str(tiny_llama), runs, dtype="float32")
    assert served.rows is not None
    names = [served.models[m].peft_name for m in ("r2", served.base_id, "r1", "r1", "r2")]
    ids = torch.randint(5, 60, (len(names), 7), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        served.rows.use(names, ids.device)
        ours = served.model(input_ids=ids).logits
        served.rows.remove()
        theirs = served.model(input_ids=ids, adapter_names=names).logits
        base = served.model(input_ids=ids, adapter_names=["__base__"] * len(names)).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert float((theirs[0] - base[0]).abs().max()) > 1e-3 and float((theirs[2] - base[2]).abs().max()) > 1e-3


# --- the batch cache: in-place steps, leaving rows, joining groups ---

def test_batch_cache_keeps_every_row_its_own_tokens_through_steps_leaves_and_joins():
    """Every operation the scheduler applies, checked against each row's plain list of key/value
    columns: steps past the spare columns, several rows leaving at once, groups joining in place
    and (wider than the batch or beyond its rows) by a new layout."""
    from hone.model.kvcache import SPARE_COLUMNS, BatchCache

    torch.manual_seed(0)
    layers, heads, dim = 2, 3, 4
    reference: list[list[torch.Tensor]] = []  # per row: per layer (2, heads, tokens, dim) of its real tokens

    def group(lengths):
        width = max(lengths)
        pairs = [(torch.randn(len(lengths), heads, width, dim), torch.randn(len(lengths), heads, width, dim)) for _ in range(layers)]
        rows = [[torch.stack([k[i, :, width - n:], v[i, :, width - n:]]) for k, v in pairs] for i, n in enumerate(lengths)]
        mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
        return pairs, rows, mask

    def check(cache, mask):
        assert cache.rows == len(reference) == mask.shape[0] and cache.width == mask.shape[1]
        for row, expected in enumerate(reference):
            real = mask[row].bool()
            for layer, (k, v) in enumerate(cache.pairs()):
                torch.testing.assert_close(torch.stack([k[row][:, real], v[row][:, real]]), expected[layer], rtol=0, atol=0)

    def join(cache, lengths):
        pairs, rows, new_mask = group(lengths)
        reference.extend(rows)
        if cache is None or not cache.append(pairs):
            cache = BatchCache.stack([pairs] if cache is None else [cache.pairs(), pairs], capacity=6)
        width = cache.width
        pad = lambda m: torch.cat([m.new_zeros(m.shape[0], width - m.shape[1]), m], 1)  # noqa: E731
        return cache, new_mask if mask is None else torch.cat([pad(mask), pad(new_mask)])

    def step(cache, mask):
        for layer in cache.layers:
            k, v = torch.randn(cache.rows, heads, 1, dim), torch.randn(cache.rows, heads, 1, dim)
            layer.update(k, v)
            for row in range(cache.rows):
                reference[row][cache.layers.index(layer)] = torch.cat([reference[row][cache.layers.index(layer)], torch.stack([k[row], v[row]])], 2)
        return torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=mask.dtype)], 1)

    def leave(cache, mask, rows):
        order, cut = cache.remove(rows, mask)
        assert sorted(order) == sorted(set(range(len(reference))) - set(rows))
        reference[:] = [reference[i] for i in order]
        mask = mask[order]
        first = int(mask.any(0).nonzero()[0])
        assert torch.equal(cut, mask[:, first:])
        return cut

    mask = None
    cache, mask = join(None, [5, 3])
    check(cache, mask)
    layout = cache.layers[0].key_buffer
    for _ in range(SPARE_COLUMNS + 3):  # past the spare columns: a new layout, same tokens
        mask = step(cache, mask)
    assert cache.layers[0].key_buffer is not layout
    check(cache, mask)
    cache, mask = join(cache, [4, 7])  # in place: rows and columns to spare
    layout = cache.layers[0].key_buffer
    check(cache, mask)
    mask = leave(cache, mask, [0, 3])  # the last row moves into row 0; row 3 was the last
    check(cache, mask)
    mask = step(cache, mask)
    mask = leave(cache, mask, [0])  # the oldest row leaves: its padding columns go
    check(cache, mask)
    cache, mask = join(cache, [2, 2, 6])  # fits the buffer's rows (capacity 6 < 2 + 3 + ...)
    assert cache.layers[0].key_buffer is layout
    check(cache, mask)
    cache, mask = join(cache, [cache.layers[0].length + 5])  # longer than the batch: a new layout
    assert cache.layers[0].key_buffer is not layout
    check(cache, mask)
    mask = leave(cache, mask, list(range(1, cache.rows)))
    check(cache, mask)


def test_rows_joining_and_leaving_mid_answer_answer_as_alone(tiny_llama):
    """Answers of different lengths (some past the cache's spare columns) that start while others
    are half done: each equals its answer alone."""
    served = load_served(str(tiny_llama), [], dtype="float32")
    scheduler = Scheduler(served, max_batch=4, threads=1)
    scheduler.start()
    prompts = [[5 + i, 9, 17, 33 + 7 * i, 11, 40 + i][: 2 + i % 4] for i in range(7)]
    lengths = [3, 70, 12, 5, 80, 9, 30]
    try:
        alone = [_greedy(scheduler, served, p, n) for p, n in zip(prompts, lengths)]
        results: list = [None] * len(prompts)
        threads = []
        for i, (p, n) in enumerate(zip(prompts, lengths)):
            threads.append(threading.Thread(target=lambda i=i, p=p, n=n: results.__setitem__(i, _greedy(scheduler, served, p, n))))
            threads[-1].start()
            time.sleep(0.02 * (i % 3))  # joins between steps of the answers already running
        for thread in threads:
            thread.join()
    finally:
        scheduler.stop()
    assert [len(ids) for ids in alone] == lengths  # no answer stopped early: every length was exercised
    assert results == alone
    assert scheduler.prefills > 2  # several groups joined a running batch


def test_prompts_sharing_a_start_reuse_its_keys_and_answer_as_without_the_store():
    """The demo's tickets share their system prompt and template header: later prompts prefill
    only what differs (in groups mixing reused and fresh rows, and a prompt wholly an earlier
    one's), and every answer equals the answer with the store off."""
    from hone.data.render import render_generation_prompt

    served = load_served("embedded", [], dtype="float32")
    tokenizer = served.models[served.base_id].tokenizer
    tickets = [json.loads(line)["messages"][:-1] for line in (DEMO / "eval.jsonl").read_text().splitlines()[:7]]
    prompts = [render_generation_prompt(tokenizer, t) for t in tickets]
    prompts += [prompts[0], prompts[1][-20:]]  # one seen whole; one sharing no start
    shared = len(os.path.commonprefix(prompts[:7]))
    answers = {}
    for store in (0, 4096):
        scheduler = Scheduler(served, max_batch=4, threads=1, prefix_tokens=store)
        scheduler.start()
        try:
            results: list = [None] * len(prompts)
            threads = []
            for i, prompt in enumerate(prompts):
                threads.append(threading.Thread(target=lambda i=i, p=prompt: results.__setitem__(i, _greedy(scheduler, served, p, 24))))
                threads[-1].start()
                time.sleep(0.05 * (i % 2))
            for thread in threads:
                thread.join()
        finally:
            scheduler.stop()
        answers[store] = (results, scheduler.prefixes.reused)
    assert shared > 30 and answers[0][1] == 0 and answers[4096][1] >= 5 * shared  # used, and only when on
    assert answers[4096][0] == answers[0][0]


def _greedy(scheduler, served, prompt, max_tokens):
    done, out = threading.Event(), []

    def emit(event):
        if event[0] == "finish":
            out.extend(event[4])
        if event[0] != "delta":
            done.set()
    scheduler.submit(Request(served.base_id, prompt, Params(max_tokens=max_tokens, temperature=0), 1, emit))
    assert done.wait(120)
    return out
