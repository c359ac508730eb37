"""`train.objective: grpo` and `rloo`: online RL from rewards (`rl` settings, `hone.config.RLArgs`).

Each micro-batch of prompts becomes, inside `loss`: G sampled completions per prompt
(`hone.train.rollout`, batched with a KV cache, seeded per (run seed, step, prompt, member)),
their rewards (`hone.train.rewards`), advantages from the group, and the policy loss over the
completion tokens from one packed forward pass through the chunked head (no logits held).
One optimizer step per rollout, so the "old" policy is the current one detached: the ratio is
1 but its gradient flows, as in TRL's default (num_iterations 1). The reference is the base
with the adapter switched off (no second copy); `rl.beta` 0 skips it.

With S completions, per-token log-probabilities l, reference r, mask m, advantages A:
  grpo   per token: -min(e^(l-l') A, clip(e^(l-l'), 1-eps, 1+eps) A) + beta (e^(r-l) - (r-l) - 1) e^(l-l'),
         A = (R - mean_group R) / (std + 1e-4) (std of the group, the batch, or none);
         reduced per `rl.loss_type`: grpo mean_s(sum_t m / sum_t m), bnpo sum / sum m,
         dr_grpo sum / (S x max_new_tokens)
  rloo   per completion: L = sum_t l m, -min(e^(L-L') A, clip(...) A), mean over completions,
         A = R - beta sum_t (l' - r) m - mean of the group's other rewards (leave-one-out)
which are TRL 1.16's GRPOTrainer and RLOOTrainer losses (tested equal to 1e-5).

The loop divides the summed loss by the step's count; the count is the prompts, so `total`
is the batch's loss times its prompts and every metric is summed per prompt.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hone.config import RLArgs, RunConfig
from hone.data.collate import PACK_MULTIPLE, pack_batch, pad_batch, row_length
from hone.data.prompts import tokenize_prompts
from hone.data.render import IGNORE, Tokenized
from hone.engine.attention import shares_prefixes
from hone.errors import HoneError
from hone.model.generate import stop_token_ids
from hone.model.load import load_tokenizer
from hone.model.methods import get as get_method
from hone.train import objectives
from hone.train.logprobs import decoder_hidden, token_logprobs
from hone.train.preference import starting_adapter_files
from hone.train.loss import CHUNK_ELEMENTS, ROWS_MULTIPLE, split_model
from hone.train.rewards import build_rewards, score_completions
from hone.train.rollout import SamplingArgs, completion_seed, sample

EVAL_STEP = -1  # held-out prompts sample with this step: the same completions at every evaluation
ROLLOUTS_FILE = "rollouts.jsonl"  # one sampled completion per training micro-batch, for reading what is rewarded


# --- advantages ---

def grpo_advantages(rewards: torch.Tensor, group: int, scale: str) -> torch.Tensor:
    """(S,) rewards, groups of `group` consecutive completions -> (S,) advantages."""
    grouped = rewards.view(-1, group)  # prompts, G
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    if scale == "none":
        return centred
    std = grouped.std(dim=1).repeat_interleave(group) if scale == "group" else rewards.std().expand_as(rewards)
    return centred / (std + 1e-4)


def rloo_advantages(rewards: torch.Tensor, group: int, normalize: bool) -> torch.Tensor:
    """Each completion's reward minus the mean of the other completions of its group."""
    grouped = rewards.view(-1, group)
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group - 1)
    advantages = (grouped - others).view(-1)
    if normalize:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-4)
    return advantages


# --- losses over (S, T) completion tensors ---

def clipped(ratio: torch.Tensor, advantages: torch.Tensor, epsilon: float) -> torch.Tensor:
    return -torch.min(ratio * advantages, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * advantages)


def k3_kl(logps: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate e^(r-l) - (r-l) - 1 (>= 0, unbiased)."""
    delta = reference - logps
    return torch.exp(delta) - delta - 1


def grpo_loss(args: RLArgs, logps, reference, advantages, mask) -> torch.Tensor:
    """logps, reference (or None), mask: (S, T); advantages (S,) -> the scalar loss."""
    ratio = torch.exp(logps - logps.detach())  # 1, with the gradient of logps
    per_token = clipped(ratio, advantages.unsqueeze(1), args.epsilon)
    if args.beta and reference is not None:  # times the ratio: the unbiased reverse-KL gradient (DeepSeek-V3.2, TRL's default)
        per_token = per_token + args.beta * k3_kl(logps, reference) * ratio
    summed = per_token * mask
    if args.loss_type == "grpo":
        return (summed.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).mean()
    if args.loss_type == "bnpo":
        return summed.sum() / mask.sum().clamp(min=1.0)
    return summed.sum() / (mask.shape[0] * args.max_new_tokens)  # dr_grpo


def rloo_loss(args: RLArgs, logps, reference, advantages, mask) -> torch.Tensor:
    sequence = (logps * mask).sum(dim=1)  # S
    return clipped(torch.exp(sequence - sequence.detach()), advantages, args.epsilon).mean()


def grpo_shaping(args: RLArgs, rewards, logps, reference, mask) -> torch.Tensor:
    return grpo_advantages(rewards, args.group_size, args.scale_rewards)


def rloo_shaping(args: RLArgs, rewards, logps, reference, mask) -> torch.Tensor:
    if args.beta and reference is not None:  # the KL is a penalty on the reward, first-order, per completion
        rewards = rewards - args.beta * ((logps.detach() - reference) * mask).sum(dim=1)
    return rloo_advantages(rewards, args.group_size, args.normalize_advantages)


# --- per-token log-probabilities of the completions ---

def completions_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int, layout: str):
    """prompt + completion per sequence, labels on the completion (its stop token included):
    packed (`pack`), padded (`pad`), or `group`: one packed row where each group's prompt is
    computed once (`group_batch`)."""
    if layout == "group":
        return group_batch(prompts, completions, pad_id)
    sequences = [Tokenized(p + c, [IGNORE] * len(p) + c) for p, c in zip(prompts, completions)]
    return pack_batch(sequences, pad_id, PACK_MULTIPLE) if layout == "pack" else pad_batch(sequences, pad_id)


def group_batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Consecutive completions of one prompt in one packed row with the prompt computed once:
    the group's first segment is prompt + completion, each other segment only its completion,
    which borrows the prompt's rows as its attention prefix (`hone.engine.attention._Layout`;
    positions continue after the prompt). `predictors` (N,) names the row that predicts each
    completion token (the prompt's last row for every completion's first), `targets` (N,) the
    token, sequence by sequence."""
    ids, positions, lengths, borrow, predictors = [], [], [], [], []
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        if i == 0 or prompt != prompts[i - 1]:  # a new group: its prompt, in full
            start, end = len(ids), len(ids) + len(prompt)
            ids += prompt + completion
            positions += range(len(prompt) + len(completion))
            lengths.append(len(prompt) + len(completion))
            borrow.append((0, 0))
            predictors += range(end - 1, end - 1 + len(completion))
        else:
            first = len(ids)
            ids += completion
            positions += range(len(prompt), len(prompt) + len(completion))
            lengths.append(len(completion))
            borrow.append((start, len(prompt)))
            predictors += [end - 1, *range(first, first + len(completion) - 1)]
    filler = row_length(len(ids), PACK_MULTIPLE) - len(ids)
    if filler:
        ids, positions = ids + [pad_id] * filler, positions + list(range(filler))
        lengths.append(filler)
        borrow.append((0, 0))
    return {"input_ids": torch.tensor([ids]), "position_ids": torch.tensor([positions]), "seq_lengths": torch.tensor(lengths),
            "borrow": torch.tensor(borrow), "predictors": torch.tensor(predictors),
            "targets": torch.tensor([token for completion in completions for token in completion])}


def completion_logprobs(model, batch, lengths: list[int], temperature: float) -> torch.Tensor:
    """(S, T) log-probabilities of each completion's tokens at `temperature` (T: the longest
    completion), 0 past each one's end. The chunked head as in `hone.train.logprobs`; dividing
    the rows (the head has no bias) divides the logits."""
    _, head, softcap = split_model(model)
    if "predictors" in batch:  # a group row: the rows that predict each token are named
        keep = torch.zeros(1, batch["input_ids"].shape[1] - 1, dtype=torch.bool, device=batch["input_ids"].device)
        keep[0, batch["predictors"]] = True
        hidden = decoder_hidden(model, batch, keep)  # 1, T, C
        rows, wanted = hidden[0, batch["predictors"]], batch["targets"]  # N, C and N
    else:
        targets = batch["labels"][:, 1:]  # position t predicts token t+1
        keep = targets != IGNORE
        hidden = decoder_hidden(model, batch, keep)  # B, T, C
        rows, wanted = hidden[:, :-1][keep], targets[keep]  # N, C and N (sequence by sequence, in order)
    if temperature != 1.0:
        rows = rows / temperature
    count = int(wanted.numel())
    filler = -count % ROWS_MULTIPLE
    if filler:
        rows, wanted = F.pad(rows, (0, 0, 0, filler)), F.pad(wanted, (0, filler), value=IGNORE)
    step = max(ROWS_MULTIPLE, CHUNK_ELEMENTS // head.weight.shape[0] // ROWS_MULTIPLE * ROWS_MULTIPLE)
    token = token_logprobs(rows, wanted, head, softcap, step)[:count]  # N
    mask = completion_mask(lengths, token.device)
    return torch.zeros(mask.shape, dtype=token.dtype, device=token.device).masked_scatter(mask.bool(), token)


def completion_mask(lengths: list[int], device) -> torch.Tensor:
    """(S, T) 1.0 on each completion's tokens."""
    return (torch.arange(max(lengths), device=device).unsqueeze(0) < torch.tensor(lengths, device=device).unsqueeze(1)).float()


# --- the objective ---

@dataclasses.dataclass
class OnlineRL:
    """An online RL objective: `shaping(args, rewards, logps, reference, mask)` -> advantages (S,),
    `policy_loss(args, logps, reference, advantages, mask)` -> scalar."""

    name: str
    shaping: object
    policy_loss: object
    args: RLArgs = dataclasses.field(default_factory=RLArgs)
    tokenize = staticmethod(tokenize_prompts)
    prompts: list = dataclasses.field(default_factory=list)
    """The run's prompt items, train then held-out, by `index`."""
    rewards: list = dataclasses.field(default_factory=list)
    tokenizer: object = None
    stops: list = dataclasses.field(default_factory=list)
    pad_id: int = 0
    run_seed: int = 0
    layout: str = "group"
    """How completions are laid out for the loss: `group` (packed, each prompt computed once per
    group; hone's CPU attention), `pack` (packed, a prompt per completion) or `pad`."""
    step: int = 1
    run_dir: Path | None = None
    watch: "RunawayWatch | None" = None
    start_adapter: "StartingAdapter | None" = None
    """`rl.init_from`'s adapter, merged into the base (the reference) and added back when saving."""

    def count(self, item) -> int:
        return 1  # the loss is a mean over prompts

    def batch(self, items, pad_id: int, layout: str) -> dict[str, torch.Tensor]:
        return {"prompts": torch.tensor([item.index for item in items])}

    def begin_step(self, step: int) -> None:
        self.step = step

    def loss(self, model, batch) -> objectives.Loss:
        items = [self.prompts[i] for i in batch["prompts"].tolist()]
        training, group = model.training, self.args.group_size
        members = [item for item in items for _ in range(group)]  # S = prompts x G, groups consecutive
        started = time.perf_counter()
        completions = self.rollout(model, items, self.step if training else EVAL_STEP)
        sampling_seconds = time.perf_counter() - started
        texts = [self.tokenizer.decode(c.ids, skip_special_tokens=True).strip() for c in completions]
        rewards, each = score_completions(self.rewards, texts, members)
        loss, logps, reference, mask = self.policy_loss_of(model, members, [c.ids for c in completions], rewards,
                                                           batch["prompts"].device)
        metrics = rollout_metrics(rewards, each, logps.detach(), reference, mask, completions, group)
        metrics["sampling_seconds"] = sampling_seconds
        if training:
            self.record(items[0], texts[0], float(rewards[0]), metrics)
        n = len(items)
        return objectives.Loss(loss * n, n, {key: value * n for key, value in metrics.items()})

    def policy_loss_of(self, model, members, completions: list[list[int]], rewards: torch.Tensor, device):
        """(loss, per-token log-probabilities (S, T), the reference's or None, mask (S, T)) of
        sampled `completions` (token ids) to their prompt items `members` with their `rewards` (S,)."""
        lengths = [len(ids) for ids in completions]
        forward = completions_batch([m.prompt_ids for m in members], completions, self.pad_id, self.layout)
        forward = {k: v.to(device) for k, v in forward.items()}
        logps = completion_logprobs(model, forward, lengths, self.args.temperature)  # S, T
        reference = self.reference(model, forward, lengths)
        mask = completion_mask(lengths, device)
        advantages = self.shaping(self.args, rewards.to(device), logps, reference, mask)
        return self.policy_loss(self.args, logps, reference, advantages, mask), logps, reference, mask

    def rollout(self, model, items, step: int):
        prompts = [item.prompt_ids for item in items for _ in range(self.args.group_size)]
        seeds = [completion_seed(self.run_seed, step, item.index, member)
                 for item in items for member in range(self.args.group_size)]
        sampling = SamplingArgs(self.args.max_new_tokens, self.args.temperature, self.args.top_p)
        was_training = model.training
        model.eval()  # no dropout while sampling
        try:
            return sample(model, prompts, seeds, sampling, self.stops, self.pad_id)
        finally:
            model.train(was_training)

    def reference(self, model, forward, lengths):
        if not self.args.beta:
            return None
        with torch.no_grad(), model.disable_adapter():
            return completion_logprobs(model, forward, lengths, self.args.temperature)

    def record(self, item, text: str, reward: float, metrics: dict) -> None:
        """One completion per micro-batch into the run folder, and the runaway watch."""
        if self.run_dir is not None:
            with open(Path(self.run_dir) / ROLLOUTS_FILE, "a") as handle:
                handle.write(json.dumps({"step": self.step, "prompt": item.index, "completion": text, "reward": reward}) + "\n")
        if self.watch is not None:
            self.watch.see(self.step, metrics)

    def start(self, setup, config: RunConfig, train, evals, resume: bool):
        """Read `config.rl`, build the rewards, load the starting adapter, index the prompts."""

        check_supported(setup, config)
        rewards = build_rewards(config.rl.rewards)
        if config.train.spike_factor:  # the guard reads a loss spike as divergence; here the loss hovers around 0
            print(f"{self.name}: the policy loss hovers around 0 and changes sign, so the divergence guard's spike test "
                  "(train.spike_factor) is off for this run; non-finite losses still roll back")
            config.train.spike_factor = 0.0
        start = merge_starting_adapter(setup.model, config.rl.init_from) if config.rl.init_from else None
        for index, item in enumerate(list(train) + list(evals)):
            item.index = index
        tokenizer = load_tokenizer(config.model)
        objective = dataclasses.replace(
            self, args=config.rl, prompts=list(train) + list(evals), rewards=rewards, tokenizer=tokenizer,
            stops=stop_token_ids(tokenizer, setup.model), pad_id=setup.pad_id, run_seed=config.train.seed,
            layout=loss_layout(config, setup.device), run_dir=setup.run_dir, watch=RunawayWatch(config.rl), start_adapter=start)
        print(f"{self.name}: {config.rl.group_size} completions per prompt (up to {config.rl.max_new_tokens} tokens), "
              f"rewards {' + '.join(f'{r.weight:g} x {r.name}' for r in rewards)}, beta {config.rl.beta:g}")
        return dataclasses.replace(setup, objective=objective)


    def save(self, model, run_dir: Path, config: RunConfig) -> None:
        """The method's files; from `rl.init_from`, one LoRA adapter holding both the starting
        adapter and the trained one (ranks side by side), over the original base."""

        get_method(config.adapter.method).save(model, run_dir)
        if self.start_adapter is not None:
            self.start_adapter.join_into(run_dir, config)


def loss_layout(config: RunConfig, device) -> str:
    """`group` where hone's packed attention runs (it lays out borrowed prefixes), else a prompt
    per completion: packed, or padded with `train.packing` off."""

    if not config.train.packing:
        return "pad"
    return "group" if shares_prefixes(device) else "pack"


def check_supported(setup, config: RunConfig) -> None:
    if config.rl.beta and not hasattr(setup.model, "disable_adapter"):
        raise HoneError(f"rl.beta={config.rl.beta:g} needs an adapter: the KL reference is the base with it switched off",
                        "use adapter.method=lora, or set rl.beta=0")
    if setup.world.parallel:
        raise HoneError(f"train.objective={config.train.objective} runs in one process", "set train.nproc=1")
    if config.replay.data:
        raise HoneError(f"replay.data is not used by train.objective={config.train.objective} (prompts are sampled, not taught)",
                        "remove replay.data")


def rollout_metrics(rewards, each, logps, reference, mask, completions, group: int) -> dict[str, float]:
    """Per-batch means: reward and its spread, each reward, KL per token, completion length,
    the share of completions cut at max_new_tokens and of groups whose rewards are all equal."""
    tokens = mask.sum().clamp(min=1.0)
    metrics = {"reward": float(rewards.mean()), "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
               "completion_length": float(mask.sum(dim=1).mean()),
               "truncated": sum(not c.stopped for c in completions) / len(completions),
               "zero_std_groups": float((rewards.view(-1, group).std(dim=1) < 1e-6).float().mean())}
    metrics.update({f"reward_{name}": float(values.mean()) for name, values in each.items()})
    if reference is not None:
        metrics["kl"] = float((k3_kl(logps, reference) * mask).sum() / tokens)
    return metrics


class RunawayWatch:
    """Warns when completions grow long or the reward runs away from where it started while
    the policy drifts from the reference: the usual signs of a reward being gamed."""

    FIRST_STEPS = 3  # the steps whose means are the baseline

    def __init__(self, args: RLArgs):
        self.args = args
        self.first: list[dict] = []
        self.warned: set[str] = set()

    def see(self, step: int, metrics: dict) -> None:
        if len(self.first) < self.FIRST_STEPS:
            self.first.append(metrics)
            return
        length = sum(m["completion_length"] for m in self.first) / len(self.first)
        reward = sum(m["reward"] for m in self.first) / len(self.first)
        spread = max(sum(m["reward_std"] for m in self.first) / len(self.first), 1e-3)
        if metrics["completion_length"] > self.args.length_warning * length or metrics["truncated"] >= 0.5:
            self.warn("length", f"warning at step {step}: completions average {metrics['completion_length']:.0f} tokens "
                      f"(first steps {length:.0f}), {metrics['truncated']:.0%} cut at rl.max_new_tokens: the reward may "
                      f"favour length; read {ROLLOUTS_FILE}, add a length_penalty reward or lower rl.max_new_tokens")
        if metrics["reward"] > reward + 4 * spread and metrics.get("kl", 0.0) > 0.1:
            self.warn("reward", f"warning at step {step}: reward {metrics['reward']:.3f} is far above its start "
                      f"{reward:.3f} (spread {spread:.3f}) with KL {metrics['kl']:.3f} per token from the reference: "
                      f"check {ROLLOUTS_FILE} for reward hacking; raise rl.beta or lower the learning rate")

    def warn(self, kind: str, message: str) -> None:
        if kind not in self.warned:  # once per run and kind: a warning, not a flood
            self.warned.add(kind)
            print(message)


# --- the starting point: a finished LoRA run, merged into the base ---

@dataclasses.dataclass
class StartingAdapter:
    tensors: dict
    """The run's LoRA tensors as PEFT saved them (`...<module>.lora_A.weight`, `...lora_B.weight`)."""
    scale: float
    """lora_alpha / r (or / sqrt(r) with rsLoRA)."""

    def join_into(self, run_dir: Path, config: RunConfig) -> None:
        """Rewrite the saved adapter as [start | trained]: A stacked, B side by side with the
        start's rows rescaled to the trained adapter's scale; r and lora_alpha summed to match."""
        from safetensors.torch import load_file, save_file  # noqa: PLC0415

        weights, settings = Path(run_dir) / "adapter_model.safetensors", Path(run_dir) / "adapter_config.json"
        trained, saved = load_file(weights), json.loads(settings.read_text())
        rank, alpha = saved["r"], saved["lora_alpha"]
        scale = alpha / (rank ** 0.5 if saved.get("use_rslora") else rank)
        joined = dict(trained)
        for key, a in self.tensors.items():
            if key.endswith(".lora_A.weight"):
                b_key = key.replace(".lora_A.", ".lora_B.")
                joined[key] = torch.cat([a.to(trained[key].dtype), trained[key]], dim=0)
                start_b = self.tensors[b_key].float() * (self.scale / scale)
                joined[b_key] = torch.cat([start_b.to(trained[b_key].dtype), trained[b_key]], dim=1)
        start_rank = next(v.shape[0] for k, v in self.tensors.items() if k.endswith(".lora_A.weight"))
        saved.update(r=rank + start_rank, lora_alpha=scale * (rank + start_rank), use_rslora=False)
        save_file({k: v.contiguous() for k, v in joined.items()}, weights, metadata={"format": "pt"})
        settings.write_text(json.dumps(saved, indent=2))


@torch.no_grad()
def merge_starting_adapter(model, run: str) -> StartingAdapter:
    """Add `run`'s LoRA update (scale x B @ A) into the base weights: the adapter about to train
    starts at zero on top of it, so the adapter-off reference is the starting model itself and the
    KL is 0 at the first step. A plain LoRA (no DoRA, one rank for every module) is required."""
    from safetensors.torch import load_file  # noqa: PLC0415

    weights, saved = starting_adapter_files(model, Path(run), "rl.init_from", "a short SFT run")
    if saved.get("peft_type") != "LORA" or saved.get("use_dora") or saved.get("rank_pattern") or saved.get("alpha_pattern"):
        raise HoneError(f"rl.init_from: {run} is not a plain LoRA adapter (DoRA or per-module ranks)",
                        "start from a plain LoRA run (adapter.method=lora, use_dora=false)")
    scale = saved["lora_alpha"] / (saved["r"] ** 0.5 if saved.get("use_rslora") else saved["r"])
    tensors = load_file(weights)
    merged = 0
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        path = key[: -len(".lora_A.weight")]
        try:
            layer = model.get_submodule(path)
        except AttributeError:
            raise HoneError(f"rl.init_from: {run} adapts {path}, which this model lacks",
                            "start from a run trained on the same model.path") from None
        base = getattr(layer, "base_layer", layer)
        delta = scale * tensors[key.replace(".lora_A.", ".lora_B.")].float() @ a.float()  # out, in
        if delta.shape != base.weight.shape:
            raise HoneError(f"rl.init_from: {run}'s {path} is {tuple(delta.shape)}, this model's {tuple(base.weight.shape)}",
                            "start from a run trained on the same model.path")
        base.weight.add_(delta.to(base.weight.dtype))
        merged += 1
    print(f"starting from the adapter of {run} ({merged} modules merged into the base: the KL reference)")
    return StartingAdapter(tensors, scale)


GRPO = objectives.register(OnlineRL("grpo", grpo_shaping, grpo_loss))
RLOO = objectives.register(OnlineRL("rloo", rloo_shaping, rloo_loss))
