"""`hone plan`'s timing probes are sized by the machine, never by the model, and bounded in time.

A user's CPU without AVX-512 or AMX emulates bf16 matmuls at ~1 GFLOP/s; this machine has AMX, so
the slow case is simulated: `torch.matmul` is replaced by a fake that does no arithmetic, counts
each product's FLOPs and advances a fake `time.perf_counter` by FLOPs / rate of its dtype. Every
assertion is on that counted work and fake time, none on real wall-clock."""

import time

import pytest
import torch

from hone.model.load import PROBE_BUDGET_S, cpu_bf16_is_faster
from hone.plan.estimate import measured_flops_per_s

SIDE_CAP = 2048
EMULATED = 1e9
"""bf16 FLOP/s on an AVX2-only CPU (the report: 223 GFLOP of probe products in over five minutes)."""


class FakeMachine:
    """A clock and a matmul that does no work: each product costs FLOPs / rate[dtype] fake seconds."""

    def __init__(self, rates: dict):
        self.rates, self.now, self.products = rates, 0.0, []

    def clock(self) -> float:
        return self.now

    def matmul(self, a, b):
        self.products.append((a.dtype, a.shape[0], a.shape[1], b.shape[1]))
        self.now += 2 * a.shape[0] * a.shape[1] * b.shape[1] / self.rates[a.dtype]
        return torch.empty(a.shape[0], b.shape[1], dtype=a.dtype)

    def flops(self, dtype=None) -> float:
        return sum(2 * m * k * n for d, m, k, n in self.products if dtype in (None, d))


@pytest.fixture
def machine(monkeypatch):
    """Install a FakeMachine (rates set by the test) and keep the probes' caches out of the way."""
    fake = FakeMachine({})
    monkeypatch.setattr(time, "perf_counter", fake.clock)
    monkeypatch.setattr(torch, "matmul", fake.matmul)
    monkeypatch.setattr(torch.Tensor, "__matmul__", lambda a, b: fake.matmul(a, b))  # `x @ w` counts too
    measured_flops_per_s.cache_clear()
    cpu_bf16_is_faster.cache_clear()
    yield fake
    measured_flops_per_s.cache_clear()
    cpu_bf16_is_faster.cache_clear()


@pytest.mark.parametrize("rate", [EMULATED, 1e11, 1e13])
def test_flops_probe_work_is_bounded_whatever_the_model(machine, rate):
    machine.rates = {torch.bfloat16: rate}
    works = {}
    for hidden in (64, 4096, 8192, 16384):  # a tiny model up to a 400B-class width
        machine.now, machine.products = 0.0, []
        measured = measured_flops_per_s.__wrapped__(hidden, "bfloat16")
        assert measured == pytest.approx(rate, rel=1e-6)  # still the machine's FLOP/s
        assert machine.now <= PROBE_BUDGET_S + 1e-9, (hidden, machine.now, machine.products)
        assert max(max(p[1:]) for p in machine.products) <= SIDE_CAP
        assert machine.flops() <= 17 * 2 * SIDE_CAP**3  # sizing products plus at most 15 repeats
        works[hidden] = list(machine.products)
    assert works[4096] == works[8192] == works[16384]  # past the cap, model size changes nothing


def test_emulated_bf16_flops_probe_stays_at_the_smallest_side(machine):
    machine.rates = {torch.bfloat16: EMULATED}
    measured_flops_per_s.__wrapped__(4096, "bfloat16")
    assert {p[1:] for p in machine.products} == {(256, 256, 256)}  # 34 ms each: never doubled
    assert len(machine.products) <= 16


def test_bf16_is_not_chosen_when_emulated_and_the_check_stops_early(machine):
    machine.rates = {torch.float32: 100 * EMULATED, torch.bfloat16: EMULATED}
    assert cpu_bf16_is_faster.__wrapped__() is False
    bf16 = [p for p in machine.products if p[0] == torch.bfloat16]
    assert 1 <= len(bf16) <= 6 and all(p[1:] == (256, 256, 256) for p in bf16)  # one sizing product, 5 repeats
    assert len(machine.products) - len(bf16) <= 7  # fp32: sides 256 and 512, 5 repeats
    assert max(max(p[1:]) for p in machine.products) <= 512
    assert machine.now <= 2 * PROBE_BUDGET_S


def test_bf16_is_chosen_where_it_is_faster(machine):
    machine.rates = {torch.float32: 1e11, torch.bfloat16: 4e11}
    assert cpu_bf16_is_faster.__wrapped__() is True


@pytest.fixture
def llama_8b_plan_config(tmp_path, tiny_llama, chat_file):
    """A run on Llama 3.1 8B's config.json (no weights), the tiny model's tokenizer, bf16 on this CPU."""
    from transformers import LlamaConfig

    from hone.config import load_config

    folder = tmp_path / "llama-8b"
    LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, tie_word_embeddings=False).save_pretrained(folder)
    path = tmp_path / "run.yaml"
    path.write_text(f"model:\n  path: {folder}\n  tokenizer: {tiny_llama}\n  device: cpu\n  dtype: bfloat16\n"
                    f"data:\n  train: {chat_file}\ntrain:\n  output_dir: {tmp_path / 'run'}\n")
    return load_config(path)


def test_plan_of_an_8b_model_on_an_emulating_cpu_never_builds_it(machine, monkeypatch, llama_8b_plan_config):
    import hone.plan.calibrate
    import hone.plan.estimate
    from hone.plan.estimate import plan_run

    def refuse(config):
        raise AssertionError("the plan built the 8B model")

    monkeypatch.setattr(hone.plan.calibrate, "build_random_trainable", refuse)
    # it times a 2-layer, width-64 copy (fixed size); its steps are not the probe under test
    monkeypatch.setattr(hone.plan.estimate, "measured_layer_overhead", lambda model_type, method: 1e-3)
    machine.rates = {torch.bfloat16: EMULATED, torch.float32: 1e11}
    plan = plan_run(llama_8b_plan_config)
    assert plan.time_source == "estimated" and plan.total_params > 8e9
    assert plan.this_machine_flops_per_s == pytest.approx(EMULATED, rel=1e-6)
    assert machine.now <= PROBE_BUDGET_S + 1e-9 and machine.flops() <= 16 * 2 * 256**3
    assert plan.this_machine_seconds > 0 and "GFLOP/s measured matmul" in plan.text()


def test_small_models_are_estimated_when_their_untimed_steps_would_be_slow():
    """A 22M model's warm-up and eval steps at an emulated bf16 rate take minutes, outside
    calibrate.BUDGET_S: the plan must not time real steps then; at an AMX rate it may."""
    from transformers import LlamaConfig

    from hone.config import RunConfig
    from hone.plan.calibrate import BUDGET_S
    from hone.plan.estimate import DataStats, hone_settings, time_by_steps, untimed_seconds
    from hone.plan.memory import BatchShape, describe_model

    arch = describe_model(LlamaConfig(vocab_size=8000, hidden_size=512, intermediate_size=1408, num_hidden_layers=6,
                                      num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=True))
    config = RunConfig()
    settings = hone_settings(config, "cpu", 2.0)
    data = DataStats(100, 25_600, 51_200, 12_800, 512, BatchShape(4, 512, 1024), "data")
    splits = ([object()], [])
    slow = untimed_seconds(arch, settings, data, config, EMULATED)
    fast = untimed_seconds(arch, settings, data, config, 1e12)
    assert slow > 60 * BUDGET_S and fast < BUDGET_S
    assert not time_by_steps(splits, "cpu", arch, "lora", slow)
    assert time_by_steps(splits, "cpu", arch, "lora", fast)
    assert untimed_seconds(arch, settings, data, config, 0.0) == float("inf")  # no rate: never time blindly
