"""Online RL (grpo, rloo): rewards, group advantages, losses equal to TRL's, seeded rollouts,
and the real CLI on a tiny model (with an exact resume)."""

from __future__ import annotations

import json
import os
import shutil
import textwrap

import pytest
import torch

from hone.cli import main
from hone.config import RLArgs
from hone.data.prompts import PromptItem
from hone.errors import HoneError
from hone.train.metrics import read_metrics
from hone.train.rewards import build_rewards, score_completions
from hone.train.rl import GRPO, RLOO, grpo_advantages, rloo_advantages
from hone.train.rollout import SamplingArgs, completion_seed, sample

REFERENCE = '{"product": "Kestrel Router", "category": "bug", "urgency": "high", "summary": "app crashes"}'


def item(reference: str = REFERENCE, prompt_ids=(5, 6, 7), index: int = 0) -> PromptItem:
    return PromptItem(list(prompt_ids), reference, None, index)


@pytest.fixture
def schema_file(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"type": "object", "required": ["product", "urgency"],
                                "properties": {"urgency": {"enum": ["low", "medium", "high"]}}}))
    return path


# Each built-in, on a completion it rewards and one it does not.
BUILT_IN_CASES = [
    ("json_valid", {}, '{"a": 1}', 1.0),
    ("json_valid", {}, "```json\n{\"a\": 1}\n```", 1.0),
    ("json_valid", {}, '{"a": 1', 0.0),
    ("json_schema", "SCHEMA", '{"product": "x", "urgency": "high"}', 1.0),
    ("json_schema", "SCHEMA", '{"product": "x", "urgency": "soon"}', 0.0),
    ("json_schema", "SCHEMA", "not json", 0.0),
    ("field_match", {}, REFERENCE, 1.0),
    ("field_match", {}, '{"product": "Kestrel Router", "category": "bug", "urgency": "low"}', 0.5),
    ("field_match", {}, "[1, 2]", 0.0),
    ("regex", {"pattern": r"\{.*\}"}, ' {"a": 1} ', 1.0),
    ("regex", {"pattern": r"\{.*\}"}, "sure: {}", 0.0),
    ("length_penalty", {"max_chars": 10}, "x" * 10, 0.0),
    ("length_penalty", {"max_chars": 10}, "x" * 15, -0.5),
    ("length_penalty", {}, "x" * (2 * len(REFERENCE)), -1.0),
]


@pytest.mark.parametrize("name,args,completion,expected", BUILT_IN_CASES)
def test_built_in_rewards(name, args, completion, expected, schema_file):
    args = {"schema": str(schema_file)} if args == "SCHEMA" else args
    (reward,) = build_rewards([{"name": name, "args": args}])
    assert reward.score([completion], [item()]) == [pytest.approx(expected)]


def test_rewards_combine_with_weights_and_user_functions_load_by_module_name(tmp_path, monkeypatch):
    (tmp_path / "myrewards.py").write_text(textwrap.dedent("""
        def starts_with_brace(completion, reference, bonus=1.0):
            return bonus if completion.startswith("{") else 0.0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    rewards = build_rewards([{"name": "json_valid", "weight": 2.0},
                             {"name": "myrewards:starts_with_brace", "weight": 0.5, "args": {"bonus": 3.0}}])
    total, each = score_completions(rewards, ['{"a": 1}', "{oops", "no"], [item()] * 3)
    assert total.tolist() == pytest.approx([2.0 + 1.5, 1.5, 0.0])
    assert sorted(each) == ["json_valid", "starts_with_brace"]


@pytest.mark.parametrize("entries,says", [
    ([{"name": "myrewards_missing:f"}], "cannot import myrewards_missing"),
    ([{"name": "json:nothing_here"}], "module json has no function nothing_here"),
    ([{"name": "bleu"}], "rl.rewards[0].name: unknown reward 'bleu'"),
    ([{"name": "regex"}], "needs args.pattern"),
    ([{"name": "regex", "args": {"pattern": "("}}], "not a valid regular expression"),
    ([{"name": "json_schema"}], "needs args.schema"),
    ([{"name": "json_valid", "wieght": 1}], "unknown key rl.rewards[0].wieght"),
    ([{"name": "json_valid", "weight": "high"}], "rl.rewards[0].weight: 'high' is not a number"),
    ([], "rl.rewards is empty"),
])
def test_reward_mistakes_are_one_line_errors(entries, says):
    with pytest.raises(HoneError) as error:
        build_rewards(entries)
    assert says in error.value.line() and "\n" not in error.value.line()


def test_group_advantages():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0])  # two prompts, G = 3
    grpo = grpo_advantages(rewards, 3, "group")
    first = torch.tensor([1.0, 0.0, 0.0])
    assert grpo[:3].tolist() == pytest.approx(((first - first.mean()) / (first.std() + 1e-4)).tolist())
    assert grpo[3:].tolist() == pytest.approx([-2 / 3 / (0.57735 + 1e-4), 1 / 3 / (0.57735 + 1e-4), 1 / 3 / (0.57735 + 1e-4)], rel=1e-4)
    assert grpo_advantages(rewards, 3, "none").tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, -2 / 3, 1 / 3, 1 / 3])
    # leave-one-out: each reward minus the mean of its group's others
    assert rloo_advantages(rewards, 3, False).tolist() == pytest.approx([1.0, -0.5, -0.5, -1.0, 0.5, 0.5])
    assert grpo_advantages(torch.ones(4), 2, "group").tolist() == [0.0] * 4  # equal rewards teach nothing


# --- TRL's losses on the same model, completions and advantages ---

def lora_model(path, seed: int = 1):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a trained-looking adapter: the policy differs from the reference
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model


def trl_trainer(kind: str, path, model, args: RLArgs, tmp_path):
    """TRL's trainer around `model` (it adds its fused head to the model, used only when asked)."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_class, trainer_class = (GRPOConfig, GRPOTrainer) if kind == "grpo" else (RLOOConfig, RLOOTrainer)
    extra = {"loss_type": args.loss_type} if kind == "grpo" else {}
    config = config_class(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=args.group_size * 2,
                          num_generations=args.group_size, max_completion_length=args.max_new_tokens, beta=args.beta,
                          epsilon=args.epsilon, temperature=args.temperature, use_cpu=True, report_to="none",
                          save_strategy="no", bf16=False, **extra)
    trainer = trainer_class(model=model,
                            reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=config,
                            train_dataset=Dataset.from_list([{"prompt": "hi"}] * 4),
                            processing_class=AutoTokenizer.from_pretrained(path))
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def trl_inputs(trainer, model, prompts, completions, beta: float, pad_id: int):
    """TRL's batch: prompts (all one length, so positions agree), completions right-padded."""
    width = max(map(len, completions))
    completion_ids = torch.tensor([c + [pad_id] * (width - len(c)) for c in completions])
    completion_mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in completions])
    inputs = {"prompt_ids": torch.tensor(prompts), "prompt_mask": torch.ones(len(prompts), len(prompts[0]), dtype=torch.long),
              "completion_ids": completion_ids, "completion_mask": completion_mask}
    ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
    mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
    with torch.no_grad():
        if beta:
            with model.disable_adapter():
                inputs["ref_per_token_logps"] = trainer._get_per_token_logps_and_entropies(model, ids, mask, width)[0]
        inputs["old_logps"] = (trainer._get_per_token_logps_and_entropies(model, ids, mask, width)[0] * completion_mask).sum(1)
    return inputs


def lora_grads(model) -> dict[str, torch.Tensor]:
    out = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


# (objective, settings, layout of the completions in the loss's forward pass)
CASES = [("grpo", {"loss_type": "grpo", "beta": 0.04}, "group"), ("grpo", {"loss_type": "bnpo", "beta": 0.0}, "pack"),
         ("grpo", {"loss_type": "dr_grpo", "beta": 0.1, "temperature": 0.7}, "pad"), ("rloo", {"beta": 0.05}, "group")]


@pytest.mark.parametrize("kind,settings,layout", CASES)
def test_losses_and_gradients_equal_trls(kind, settings, layout, tiny_llama, tmp_path):
    import dataclasses

    from hone.engine import engine

    args = RLArgs(group_size=3, max_new_tokens=6, **settings)
    model = lora_model(tiny_llama)
    trainer = trl_trainer(kind, tiny_llama, model, args, tmp_path)
    model = trainer.model
    prompts = [[1, 40, 41, 42, 43], [1, 50, 51, 52, 53]]
    completions = [[60, 61, 0], [62, 63, 64, 65, 66, 67], [68, 2], [70, 71, 72, 0], [73], [74, 75, 76, 77, 78, 79]]
    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, 0.0, 1.0])
    members = [item(prompt_ids=p, index=i) for i, p in enumerate(prompts) for _ in range(3)]
    objective = dataclasses.replace(GRPO if kind == "grpo" else RLOO, args=args, pad_id=3, layout=layout)
    with engine(model, torch.device("cpu"), torch.float32, packing=True):
        loss, logps, reference, mask = objective.policy_loss_of(model, members, completions, rewards, torch.device("cpu"))
        loss.backward()
    ours = lora_grads(model)
    advantages = objective.shaping(args, rewards, logps.detach(), reference, mask)

    inputs = trl_inputs(trainer, model, [m.prompt_ids for m in members], completions, args.beta, pad_id=3)
    if kind == "rloo":  # TRL's reward shaping, from its per-token logps: KL summed per completion, leave-one-out
        shaped = rewards - args.beta * ((logps.detach() - reference) * mask).sum(1)
        grouped = shaped.view(-1, 3)
        expected = (grouped - (grouped.sum(1, keepdim=True) - grouped) / 2).view(-1)
        assert advantages.tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    inputs["advantages"] = advantages
    theirs_loss = trainer._compute_loss(model, inputs)
    theirs_loss.backward()
    theirs = lora_grads(model)
    assert float(loss) == pytest.approx(float(theirs_loss), abs=1e-5)
    assert ours.keys() == theirs.keys() and ours
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=1e-4)


def test_kl_is_zero_at_the_first_step_with_a_fresh_adapter(tiny_llama):
    import dataclasses

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    objective = dataclasses.replace(GRPO, args=RLArgs(group_size=2, beta=0.1), pad_id=3, layout="pad")
    members = [item(prompt_ids=[1, 40, 41])] * 2
    _, logps, reference, mask = objective.policy_loss_of(model, members, [[60, 61, 0], [62]], torch.tensor([1.0, 0.0]), "cpu")
    assert float(((torch.exp(reference - logps) - (reference - logps) - 1) * mask).abs().max()) < 1e-6


def test_seeded_rollouts_reproduce_and_depend_only_on_their_seed(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    prompts = [[1, 40, 41, 42], [1, 40, 41, 42], [1, 50, 51, 52]]
    seeds = [completion_seed(42, step=3, prompt=p, member=m) for p, m in ((0, 0), (0, 1), (1, 0))]
    args = SamplingArgs(max_new_tokens=12, temperature=1.0, top_p=0.9)
    first = sample(model, prompts, seeds, args, stops=[0], pad_id=3)
    torch.manual_seed(123)  # global RNG state plays no part
    again = sample(model, prompts, seeds, args, stops=[0], pad_id=3)
    assert [c.ids for c in first] == [c.ids for c in again]
    assert first[0].ids != first[1].ids  # the group's members differ
    alone = sample(model, prompts[2:], seeds[2:], args, stops=[0], pad_id=3)
    assert alone[0].ids == first[2].ids  # a prompt's samples do not depend on its batch
    assert all(len(c.ids) <= 12 and (c.stopped == (c.ids[-1] == 0)) for c in first)
    later = sample(model, prompts, [completion_seed(42, step=4, prompt=0, member=0)] * 3, args, stops=[0], pad_id=3)
    assert later[0].ids != first[0].ids
    from hone.engine import engine

    with engine(model, torch.device("cpu"), torch.float32, packing=True):  # as during training
        inside = sample(model, prompts, seeds, args, stops=[0], pad_id=3)
    assert [c.ids for c in inside] == [c.ids for c in first]


def test_draws_follow_each_rows_distribution_and_never_pick_a_cut_token():
    """Inverse-CDF draws from the nucleus: frequencies within 5 sigma of the renormalised
    probabilities, and tokens top_p cut never drawn."""
    from hone.train.rollout import draw, nucleus

    torch.manual_seed(0)
    probs = nucleus(torch.randn(3, 40) * 2, 1.0, 0.8)
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    counts = torch.zeros(3, 40)
    draws = 5000
    for _ in range(draws):
        counts[torch.arange(3), draw(probs, generators)] += 1
    expected = probs / probs.sum(1, keepdim=True)
    assert counts[probs == 0].sum() == 0 and (probs == 0).any()
    assert ((counts / draws - expected).abs() <= 5 * (expected * (1 - expected) / draws).sqrt() + 1e-3).all()


def test_greedy_rollouts_of_left_padded_prompts_equal_transformers_generate():
    """top_p near 0 keeps only the most likely token: each row (a group's members sharing their
    prompt's prefill, left-padded beside longer prompts, leaving the batch as they stop) equals
    transformers' greedy generate alone, on the embedded model (trained: positions matter)."""
    from transformers import AutoModelForCausalLM

    from hone.model.load import EMBEDDED_MODEL, load_tokenizer
    from hone.config import ModelArgs

    tokenizer = load_tokenizer(ModelArgs())
    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_MODEL, dtype=torch.float32).eval()
    texts = ["The weather today is", "My order number", "Dear customer service, my laptop", "The weather today is"]
    prompts = [tokenizer(text)["input_ids"] for text in texts]
    greedy = sample(model, prompts, [1, 2, 3, 4], SamplingArgs(max_new_tokens=24, temperature=1.0, top_p=1e-9),
                    stops=[tokenizer.encode(".")[-1]], pad_id=tokenizer.pad_token_id)
    assert len({len(c.ids) for c in greedy}) > 1  # rows left the batch at different steps
    for prompt, completion in zip(prompts, greedy):
        reference = model.generate(torch.tensor([prompt]), max_new_tokens=len(completion.ids), do_sample=False,
                                   eos_token_id=tokenizer.encode(".")[-1], pad_token_id=tokenizer.pad_token_id)
        assert completion.ids == reference[0, len(prompt):].tolist()


# --- the real CLI ---

def train(tiny_llama, data, run, *extra):
    return main(["train", f"model.path={tiny_llama}", f"data.train={data}", f"train.output_dir={run}", "model.dtype=float32",
                 "train.batch_size=2", "train.learning_rate=5e-3", "train.warmup_ratio=0", "train.progress=false",
                 "data.eval_fraction=0.05", "eval.compare=false", "data.check=false", "train.objective=grpo",
                 "rl.group_size=4", "rl.max_new_tokens=8", *extra])


@pytest.mark.slow
def test_grpo_trains_from_the_cli_logs_rollouts_and_resumes_exactly(tiny_llama, chat_file, tmp_path, capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    rewards = "rl.rewards=[{name: regex, args: {pattern: '.*the.*'}}, {name: length_penalty, weight: 0.5, args: {max_chars: 12}}]"
    assert train(tiny_llama, chat_file, straight, rewards, "train.max_steps=3", "train.save_every=2",
                 "train.eval_every=3", "train.keep_checkpoints=5") == 0
    rows = read_metrics(straight / "metrics.jsonl")
    for key in ("loss", "reward", "reward_std", "kl", "completion_length", "truncated", "reward_regex", "reward_length_penalty"):
        assert key in rows[-1]
    assert "eval_reward" in rows[-1]
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # a fresh adapter is the reference
    for name in ("adapter_model.safetensors", "config.yaml", "rollouts.jsonl", "summary.json"):
        assert (straight / name).is_file()
    assert "grpo: 4 completions per prompt" in capsys.readouterr().out

    shutil.copytree(straight, resumed)  # the run as it stood after step 2, resumed to step 3
    shutil.rmtree(resumed / "checkpoints" / "step-0000003")
    (resumed / "checkpoints" / "latest").write_text(json.dumps({"checkpoint": "step-0000002"}))
    assert main(["train", "--resume", str(resumed), f"train.output_dir={resumed}"]) == 0
    a, b = read_metrics(straight / "metrics.jsonl"), read_metrics(resumed / "metrics.jsonl")
    for key in ("loss", "reward", "completion_length", "kl"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], abs=1e-6)


def test_grpo_config_mistakes_are_one_line_errors(tiny_llama, chat_file, tmp_path, capsys):
    assert train(tiny_llama, chat_file, tmp_path / "a", "rl.rewards=[{name: nope}]", "train.max_steps=1") == 2
    assert train(tiny_llama, chat_file, tmp_path / "b", "rl.group_size=1", "train.max_steps=1") == 2
    assert train(tiny_llama, chat_file, tmp_path / "c", "rl.init_from=/nowhere", "train.max_steps=1") == 2
    err = capsys.readouterr().err
    assert "unknown reward 'nope'" in err and "rl.group_size" in err and "rl.init_from: /nowhere" in err
    assert "Traceback" not in err


def test_a_starting_adapter_becomes_the_reference_and_is_saved_joined_with_the_trained_one(tiny_llama, tmp_path):
    """rl.init_from: merged into the base (KL 0 at the start), saved as one LoRA of both ranks
    that PEFT loads over the original base and that computes the trained model exactly."""
    import dataclasses

    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from hone.config import load_config
    from hone.train.rl import merge_starting_adapter

    start = lora_model(tiny_llama, seed=2)
    start.save_pretrained(tmp_path / "start")
    fresh = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    adapter = merge_starting_adapter(fresh, str(tmp_path / "start"))
    ids = torch.tensor([[1, 40, 41, 42, 60, 61]])
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=ids).logits, start(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
        objective = dataclasses.replace(GRPO, args=RLArgs(group_size=2, beta=0.1), pad_id=3, layout="pad")
        _, logps, reference, mask = objective.policy_loss_of(fresh, [item(prompt_ids=[1, 40, 41])] * 2, [[60, 0], [62]],
                                                             torch.tensor([1.0, 0.0]), "cpu")
        assert float((logps - reference).abs().max()) < 1e-6  # the reference is the starting model
        for name, param in fresh.named_parameters():  # as if trained
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(3)) * 0.2)
        trained = fresh(input_ids=ids).logits
    fresh.save_pretrained(tmp_path / "run")
    adapter.join_into(tmp_path / "run", load_config(None, []))
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32), tmp_path / "run")
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, trained, atol=1e-5, rtol=1e-5)
    assert json.loads((tmp_path / "run" / "adapter_config.json").read_text())["r"] == 8


def test_a_reward_model_scores_completions_as_hone_score_reads_them(tiny_llama, tmp_path, chat_file):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from hone.data.dataset import read_examples

    config = AutoConfig.from_pretrained(tiny_llama)
    config.num_labels, config.architectures = 1, ["LlamaForSequenceClassification"]
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(tmp_path / "rm")
    (reward,) = build_rewards([{"name": "reward_model", "args": {"path": str(tmp_path / "rm")}}])
    example = read_examples(chat_file).examples[0]
    prompt = PromptItem([1], "", example)
    scores = reward.score(["yes the cat", "no", "yes the cat"], [prompt] * 3)
    assert scores[0] == pytest.approx(scores[2]) and scores[0] != scores[1]
    with pytest.raises(HoneError, match="needs args.path"):
        build_rewards([{"name": "reward_model"}])
