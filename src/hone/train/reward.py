"""`train.objective: reward`: a reward model trained on preference pairs (Bradley-Terry).

A linear score head (hidden -> 1, no bias, as transformers' `*ForSequenceClassification`)
reads the decoder's last hidden state at each sequence's last token; per pair the loss is
  -log sigmoid(r_chosen - r_rejected - margin) + center_rewards * (r_chosen + r_rejected)^2
(TRL's RewardTrainer with a constant margin and `center_rewards_coefficient`).

Saved so others load it without hone: full fine-tuning writes a folder that
`transformers.AutoModelForSequenceClassification` loads (num_labels 1); an adapter run writes a
PEFT adapter with task_type SEQ_CLS whose score head is in `modules_to_save`, loaded over
`AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)` with `PeftModel`.
The reward of an answer is read at the last token of prompt + answer rendered with the chat
template (`hone.data.pairs.render_answer`), as `hone score` renders it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from hone.config import PreferenceArgs, RunConfig
from hone.data.pairs import tokenize_pairs
from hone.engine.attention import shares_prefixes
from hone.train import objectives
from hone.train.logprobs import decoder_hidden
from hone.train.loop import autocast, to_device
from hone.train.preference import START_FILE, load_starting_adapter, pair_batch

HEAD = "score"  # the head's name in transformers' sequence-classification models


def base_of(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def attach_score_head(model, seed: int) -> torch.nn.Linear:
    """Add a trainable `score` head (hidden -> 1) to the causal LM, initialised as transformers does."""
    base = base_of(model)
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    head = torch.nn.Linear(config.hidden_size, 1, bias=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.normal_(0.0, getattr(config, "initializer_range", 0.02), generator=generator)
    base.add_module(HEAD, head.to(next(base.parameters()).device))
    return head


def sequence_rewards(model, batch: dict[str, torch.Tensor], n_sequences: int) -> torch.Tensor:
    """(S,) fp32: the score head on each sequence's last token."""
    hidden = decoder_hidden(model, batch, keep=None)  # B, T, C
    if "seq_lengths" in batch:
        ends = torch.cumsum(batch["seq_lengths"], 0)[:n_sequences] - 1
        last = hidden[0, ends]  # S, C
    else:
        ends = batch["attention_mask"].sum(dim=1) - 1
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), ends]
    return getattr(base_of(model), HEAD)(last).float().squeeze(-1)


def reward_losses(args: PreferenceArgs, chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(chosen - rejected - args.margin) + args.center_rewards * (chosen + rejected) ** 2


@dataclasses.dataclass
class RewardModel:
    name: str = "reward"
    args: PreferenceArgs = dataclasses.field(default_factory=PreferenceArgs)
    tokenize = staticmethod(tokenize_pairs)
    share_prompt: bool = False  # each pair's prompt computed once (set by `start`, see hone.train.preference)

    def count(self, item) -> int:
        return 1

    def batch(self, items, pad_id: int, layout: str) -> dict[str, torch.Tensor]:
        return pair_batch(items, pad_id, layout, self.share_prompt)

    def loss(self, model, batch) -> objectives.Loss:
        n = int(batch["pairs"])
        rewards = sequence_rewards(model, batch, 2 * n)
        chosen, rejected = rewards[:n], rewards[n:]
        margins = (chosen - rejected).detach()
        return objectives.Loss(reward_losses(self.args, chosen, rejected).sum(), n, {
            "accuracy": float((margins > 0).sum()), "margin": float(margins.sum()),
            "chosen_reward": float(chosen.detach().sum()), "rejected_reward": float(rejected.detach().sum())})

    def start(self, setup, config: RunConfig, train, evals, resume: bool):
        if config.preference.init_from:
            load_starting_adapter(setup.model, config)
        attach_score_head(setup.model, config.train.seed)
        share = config.preference.share_prompt and shares_prefixes(setup.device)
        setup = dataclasses.replace(setup, objective=dataclasses.replace(self, args=config.preference, share_prompt=share))
        report_start_accuracy(setup, evals, config)
        return setup

    def save(self, model, run_dir: Path, config: RunConfig) -> None:
        if hasattr(model, "peft_config"):
            save_reward_adapter(model, run_dir)
        else:
            save_reward_model(model, run_dir)


@torch.no_grad()
def report_start_accuracy(setup, evals, config: RunConfig) -> None:
    """The untrained head's held-out accuracy (about chance): the 'before' of before/after."""
    if not evals:
        return
    model, right = setup.model, 0
    was_training = model.training
    model.eval()
    for start in range(0, len(evals), config.train.batch_size):
        chunk = evals[start : start + config.train.batch_size]
        batch = to_device(pair_batch(chunk, setup.pad_id, "pad"), setup.device)  # padded: no engine needed
        with autocast(setup):
            rewards = sequence_rewards(model, batch, 2 * len(chunk))
        right += int((rewards[: len(chunk)] > rewards[len(chunk) :]).sum())
    model.train(was_training)
    numbers = {"eval_pairs": len(evals), "accuracy": right / len(evals)}
    (Path(setup.run_dir) / START_FILE).write_text(json.dumps(numbers, indent=1))
    print(f"untrained reward head on {len(evals)} held-out pairs: chosen scored higher in {numbers['accuracy']:.1%}")


def save_reward_adapter(model, run_dir: Path) -> None:
    """PEFT's adapter files, relabelled as a sequence-classification adapter with the score head
    in `modules_to_save` (the LoRA tensors' names are the same: both models keep the decoder at `.model`)."""
    head = getattr(base_of(model), HEAD)
    model.save_pretrained(run_dir)
    config_path, weights_path = run_dir / "adapter_config.json", run_dir / "adapter_model.safetensors"
    config = json.loads(config_path.read_text())
    config.update(task_type="SEQ_CLS", modules_to_save=[HEAD])
    config_path.write_text(json.dumps(config, indent=2))
    tensors = {k: v for k, v in load_file(weights_path).items() if f".{HEAD}." not in k}
    tensors[f"base_model.model.{HEAD}.weight"] = head.weight.detach().float().contiguous()
    save_file(tensors, weights_path, metadata={"format": "pt"})


def save_reward_model(model, run_dir: Path) -> None:
    """A whole `*ForSequenceClassification` folder (config.json + model.safetensors), num_labels 1."""
    base = base_of(model)
    config = base.config
    architecture = type(base).__name__.replace("ForCausalLM", "ForSequenceClassification")
    tensors = {k: v.detach().contiguous() for k, v in base.state_dict().items()
               if not k.startswith("lm_head.") and not k.startswith(f"{HEAD}.")}
    tensors[f"{HEAD}.weight"] = getattr(base, HEAD).weight.detach().to(next(iter(tensors.values())).dtype).contiguous()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, run_dir / "model.safetensors", metadata={"format": "pt"})
    saved = config.to_dict()
    saved.update(architectures=[architecture], num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    if saved.get("pad_token_id") is None:  # sequence classification finds each row's last token by the pad id
        saved["pad_token_id"] = saved.get("eos_token_id")
    saved.pop("tie_word_embeddings", None)
    saved["tie_word_embeddings"] = False
    (run_dir / "config.json").write_text(json.dumps(saved, indent=2))


REWARD = objectives.register(RewardModel())
