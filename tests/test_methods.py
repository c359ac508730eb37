"""The methods table: a method defined in this test file alone trains through `hone plan`,
`hone train`, evaluation and export; each real entry's properties hold on the wrapped model."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hone.cli import main
from hone.config import AdapterArgs, ModelArgs, load_config
from hone.errors import HoneError
from hone.train.commands import resolve_config
from hone.model import methods
from hone.model.adapters import count_parameters, trainable_state
from hone.model.load import load_model
from hone.plan.memory import MemorySettings, describe_model

SRC = Path(__file__).resolve().parent.parent / "src" / "hone"
REAL = ["full", "lora", "qlora"]
FP32 = "float32"  # exact comparisons: no bf16 rounding
IDS = torch.tensor([[5, 17, 42, 99, 7, 23]])

# --- a toy method, registered through the table alone: only the RMSNorm weights train ---

NORMS_FILE = "norms.safetensors"
TRAINED: dict[str, dict[str, torch.Tensor]] = {}
"""The whole state of the model each `save` was handed: what the test compares with the base."""


def is_norm(name: str) -> bool:
    return name.endswith("norm.weight")  # input_layernorm, post_attention_layernorm, the final norm


def train_norms(model, args):
    for name, param in model.named_parameters():
        param.requires_grad_(is_norm(name))
    return model


def save_norms(model, run_dir):
    save_file(trainable_state(model), Path(run_dir) / NORMS_FILE)
    TRAINED["state"] = {name: t.detach().clone() for name, t in model.state_dict().items()}


def fold_norms(base, run_dir):
    missing, unexpected = base.load_state_dict(load_file(Path(run_dir) / NORMS_FILE), strict=False)
    assert not unexpected
    return base


def load_norms(run_dir, base_args):
    return fold_norms(load_model(base_args), run_dir)


def norms_size(arch, settings):
    # a Llama layer has two RMSNorms of width `hidden`, and one more closes the stack
    return methods.Sizing(trainable=arch.hidden * (2 * arch.layers + 1), added=0, saved_per_token=0.0)


NORMS_ONLY = methods.Method(name="norms-only", wrap=train_norms, save=save_norms, saved_file=NORMS_FILE, run_kind="norms",
                            load_trained=load_norms, size=norms_size, merge=fold_norms)


@pytest.fixture
def norms_only():
    TRAINED.clear()
    method = methods.register(NORMS_ONLY)
    yield method
    methods.unregister(method.name)
    TRAINED.clear()


@pytest.fixture(scope="module")
def arch(tiny_llama):
    from transformers import AutoConfig

    return describe_model(AutoConfig.from_pretrained(tiny_llama))


def test_unknown_method_names_the_key_and_the_known_ones():
    with pytest.raises(HoneError, match=r"adapter\.method.*full, ia3, lora, prefix_tuning, prompt_tuning, qlora"):
        methods.get("prefix")
    with pytest.raises(HoneError, match=r"adapter\.method"):
        resolve_config("adapter.method=prefix", [], resume=None)


def test_a_name_is_registered_once(norms_only):
    with pytest.raises(ValueError, match="already registered"):
        methods.register(NORMS_ONLY)
    assert resolve_config("adapter.method=norms-only", [], resume=None).adapter.method == "norms-only"


def test_only_the_table_compares_method_names():
    """Call sites ask the entry; a comparison with (or a dict keyed by) a method's name is a missing property."""
    names = "|".join(REAL)
    pattern = re.compile(rf"""(==|!=)\s*["']({names})["']|["']({names})["']\s*(==|!=|:)|in \([^)]*["']({names})["']""")
    found = [f"{path.relative_to(SRC)}:{number}: {line.strip()}"
             for path in sorted(SRC.rglob("*.py")) if path.name != "methods.py"
             for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_plan_counts_the_toy_method_as_the_model_has_it(norms_only, tmp_path, tiny_llama, chat_file, arch):
    from hone.plan.estimate import plan_run

    config = load_config(None, [f"model.path={tiny_llama}", "model.device=cpu", f"data.train={chat_file}",
                                "adapter.method=norms-only", f"train.output_dir={tmp_path / 'run'}"])
    plan = plan_run(config, calibrate=False)
    model = methods.get("norms-only").wrap(load_model(config.model), config.adapter)
    assert (plan.trainable_params, plan.total_params) == count_parameters(model) == (64 * 5, arch.total_params)
    assert plan.method == "norms-only" and plan.memory.adapter == 0 and plan.memory.peak > plan.memory.weights


def test_train_with_the_toy_method_moves_only_its_parameters(norms_only, tmp_path, tiny_llama, chat_file, capsys):
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    code = main(["train", f"model.path={tiny_llama}", f"data.train={chat_file}", f"train.output_dir={run}",
                 "adapter.method=norms-only", "model.dtype=float32", "model.device=cpu", "train.max_steps=3",
                 "train.learning_rate=1e-2", "eval.compare=false", "train.progress=false"])
    out = capsys.readouterr().out
    assert code == 0
    assert "norms-only · 320 trainable of" in out and "plan: unavailable" not in out  # the plan ran on the toy's entry
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).state_dict()
    trained = TRAINED["state"]
    changed = {name for name, tensor in base.items() if not torch.equal(tensor, trained[name])}
    assert changed == {name for name in base if is_norm(name)} and len(changed) == 5
    assert set(load_file(run / NORMS_FILE)) == changed  # the run folder holds exactly what trained
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "norms-only" and summary["trainable_parameters"] == 320

    # evaluation and export find the run's weights through the same entry
    from hone.eval.models import load_for_eval
    from hone.export.merge import merge_run

    loaded = load_for_eval(str(run))
    assert loaded.kind == "norms"
    assert all(torch.equal(tensor, trained[name]) for name, tensor in loaded.model.state_dict().items())
    merged = AutoModelForCausalLM.from_pretrained(merge_run(run, tmp_path / "merged"))
    assert all(torch.equal(tensor, trained[name]) for name, tensor in merged.state_dict().items())


@pytest.mark.parametrize("name", REAL)
def test_entry_sizes_are_what_wrapping_makes(name, tiny_llama, arch):
    """The plan's counts equal the wrapped model's; `trains_base` says whether the base is frozen."""
    method = methods.get(name)
    model = method.wrap(load_model(ModelArgs(path=str(tiny_llama), dtype=FP32)), AdapterArgs(method=name, lora_rank=4))
    sizing = method.size(arch, MemorySettings(name, lora_rank=4))
    assert count_parameters(model) == (sizing.trainable, arch.total_params + sizing.added)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen == (0 if method.trains_base else arch.total_params)


def bitsandbytes_runs_here() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("name", REAL)
def test_entry_loads_the_base_as_it_says(name, tiny_llama):
    """`fp32_master_weights`: every weight fp32 under a bf16 compute dtype; `quantize_4bit`: 4-bit linears."""
    from hone.train.sft import build_trainable

    method = methods.get(name)
    if method.quantize_4bit and not bitsandbytes_runs_here():
        pytest.skip("4-bit weights need bitsandbytes")
    config = load_config(None, [f"model.path={tiny_llama}", "model.dtype=bfloat16", "model.device=cpu", f"adapter.method={name}"])
    model, compute = build_trainable(config, seed=0)
    params = list(model.parameters())
    assert compute == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in params) == method.fp32_master_weights
    assert any(type(p).__name__ == "Params4bit" for p in params) == method.quantize_4bit


@pytest.mark.parametrize("name", REAL)
def test_what_save_writes_load_trained_and_merge_read_back(name, tiny_llama, tmp_path):
    method = methods.get(name)
    if method.quantize_4bit and not bitsandbytes_runs_here():
        pytest.skip("4-bit weights need bitsandbytes")
    args = ModelArgs(path=str(tiny_llama), dtype=FP32)
    model = method.wrap(load_model(args, quantize_4bit=method.quantize_4bit), AdapterArgs(method=name, lora_rank=4))
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))  # LoRA's B starts at zero: make training visible
    method.save(model, tmp_path)
    assert (tmp_path / method.saved_file).is_file()
    with torch.no_grad():
        expected = model.eval()(input_ids=IDS).logits
        loaded = method.load_trained(tmp_path, args).eval()(input_ids=IDS).logits
    torch.testing.assert_close(loaded, expected, rtol=1e-5, atol=1e-5)
    if method.merge is None:
        assert method.merge_refusal  # `hone export` says what to do instead
    elif not method.quantize_4bit:  # folded into a full-precision base: exact only over an unquantised one
        with torch.no_grad():
            merged = method.merge(load_model(args), tmp_path)(input_ids=IDS).logits
        torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-5)
