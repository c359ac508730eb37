"""Loading what is evaluated, batched generation, loss and the forgetting measure, on tiny models."""

import dataclasses
import gzip

import pytest
import torch

from hone.config import AdapterArgs, ModelArgs, RunConfig, save_config
from hone.data.dataset import read_examples
from hone.data.render import render_prompt
from hone.eval.forgetting import general_perplexity, measure_forgetting, read_documents, resolve_general
from hone.model.generate import GenerationArgs, generate_answers, stop_token_ids
from hone.eval.models import load_for_eval
from hone.errors import HoneError
from hone.model.adapters import apply_method
from hone.model.load import load_model

FP32 = "float32"  # exact comparisons: no bf16 rounding


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models gain nothing from threads; on a busy machine extra threads only wait.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def adapter_run(tiny_llama, tmp_path_factory):
    """A run folder as `hone train` leaves it: config.yaml, tokenizer, PEFT adapter (non-zero)."""
    run = tmp_path_factory.mktemp("run")
    args = ModelArgs(path=str(tiny_llama), dtype=FP32)
    model = apply_method(load_model(args), AdapterArgs(method="lora", lora_rank=4))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # LoRA B starts at zero; make the adapter change outputs
    model.save_pretrained(run)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(run)
    save_config(RunConfig(model=args), run / "config.yaml")
    return run, model


def test_stop_tokens_include_eos_and_end_of_turn(tiny_llama):
    loaded = load_for_eval(str(tiny_llama), dtype=FP32)
    vocab = loaded.tokenizer.get_vocab()
    assert set(stop_token_ids(loaded.tokenizer, loaded.model)) >= {vocab["<|endoftext|>"], vocab["<|im_end|>"]}
    assert loaded.kind == "base" and not loaded.model.training


def test_batched_greedy_equals_one_at_a_time(tiny_llama, tmp_path):
    from tiny import make_chat_data

    loaded = load_for_eval(str(tiny_llama), dtype=FP32)
    examples = read_examples(make_chat_data(tmp_path / "d.jsonl", n=12)).examples
    prompts = [render_prompt(loaded.tokenizer, e) for e in examples]
    assert len({len(p) for p in prompts}) > 1  # different lengths, so left padding is exercised
    args = GenerationArgs(max_new_tokens=12, batch_size=6)
    batched = generate_answers(loaded.model, loaded.tokenizer, prompts, args)
    single = generate_answers(loaded.model, loaded.tokenizer, prompts, dataclasses.replace(args, batch_size=1))
    assert [a.text for a in batched] == [a.text for a in single]
    assert [a.new_tokens for a in batched] == [a.new_tokens for a in single]
    assert all(1 <= a.new_tokens <= 12 for a in batched)


def test_generation_stops_at_end_of_turn(tiny_llama):
    loaded = load_for_eval(str(tiny_llama), dtype=FP32)
    tok = loaded.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    # A head that always predicts <|im_end|>.
    loaded.model.lm_head = torch.nn.Linear(64, loaded.model.config.vocab_size, bias=True)
    with torch.no_grad():
        loaded.model.lm_head.weight.zero_()
        loaded.model.lm_head.bias.fill_(-10)
        loaded.model.lm_head.bias[end] = 10
    answer = generate_answers(loaded.model, tok, [tok("hello")["input_ids"]], GenerationArgs(max_new_tokens=8))[0]
    assert answer.text == "" and answer.stopped and answer.new_tokens == 1


def test_load_adapter_run_matches_the_trained_model(adapter_run, tiny_llama):
    run, trained = adapter_run
    loaded = load_for_eval(str(run))
    assert loaded.kind == "adapter" and loaded.run_config.model.path == str(tiny_llama)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        expected = trained.eval()(input_ids=ids).logits
        got = loaded.model(input_ids=ids).logits
        plain = load_for_eval(str(tiny_llama), dtype=FP32).model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapter is really applied


def test_run_folder_without_weights_is_a_clear_error(tmp_path, tiny_llama):
    save_config(RunConfig(model=ModelArgs(path=str(tiny_llama))), tmp_path / "config.yaml")
    with pytest.raises(HoneError, match="no adapter or model weights"):
        load_for_eval(str(tmp_path))


def _general_text(path, n=30):
    from tiny import sample_text

    docs = sample_text(n, seed=3)
    with gzip.open(path, "wt") as handle:
        handle.write("\n<|endoftext|>\n".join(docs) + "\n")
    return path


def test_forgetting_same_model_is_zero_and_damage_is_flagged(tiny_llama, tmp_path):
    text = _general_text(tmp_path / "general.txt.gz")
    assert len(read_documents(text)) == 30
    loaded = load_for_eval(str(tiny_llama), dtype=FP32)
    measure = lambda: general_perplexity(loaded.model, loaded.tokenizer, loaded.device, torch.float32, text)  # noqa: E731
    before, again = measure(), measure()
    same = measure_forgetting(before, again, 0.10, str(text))
    assert same.relative_change == 0.0 and not same.flagged
    with torch.no_grad():  # large random output weights: confident, wrong predictions
        torch.manual_seed(0)
        head = loaded.model.get_output_embeddings().weight
        head.add_(torch.randn_like(head) * 3.0)
    damaged = measure_forgetting(before, measure(), 0.10, str(text))
    assert damaged.tuned_perplexity > before.perplexity and damaged.flagged


def test_resolve_general(tmp_path):
    assert resolve_general(None) is None and resolve_general("none") is None
    with pytest.raises(HoneError, match="not found"):
        resolve_general(str(tmp_path / "nope.txt"))
