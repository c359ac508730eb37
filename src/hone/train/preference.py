"""What every pairwise preference objective shares (DPO, SimPO, ORPO; KTO and the reward
model reuse parts): pair batches, the reference log-probabilities, summed metrics, the
starting point (`preference.init_from`) and the eval watch.

Batches. A micro-batch of n pairs is 2n sequences, the chosen answers first, then the
rejected ones, each with its prompt. Packed, they form one padding-free row whose attention
stays inside each sequence (`hone.data.collate.pack_batch` and the engine's packed
attention), exactly as SFT rows. With `preference.share_prompt` (the default) the prompt is
computed once per pair (`hone.data.collate.pack_pairs`): the rejected answer's segment
holds only its answer tokens and borrows the chosen sequence's prompt rows as its attention
prefix; the borrowed keys' gradients add into the rows they came from. The mask is then
tree-shaped (the rejected answer sees the prompt, not the chosen answer), which hone's
packed attention lays out by copying the prompt's keys and values in front of the
rejected segment: the prompt's projections and MLPs run once, only its attention twice.
flash-attention's varlen layout cannot express it, so there pairs are packed as two
sequences.

Reference. `preference.reference: precompute` scores every train and eval pair once with
the starting model before the first step (the base for a fresh adapter, the `init_from`
run's model, or the full model before it trains), keeps the values on the items and in
`reference_logps.safetensors` in the run folder; a resumed run reads them back (recomputing
them with trained weights would be wrong). `live` scores each batch with PEFT's adapter
switched off: the base model, no second copy, no file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hone.config import PreferenceArgs, RunConfig
from hone.data.collate import PACK_MULTIPLE, pack_batch, pack_pairs, pad_batch
from hone.data.pairs import tokenize_pairs
from hone.engine import engine
from hone.engine.attention import shares_prefixes
from hone.errors import HoneError
from hone.model.offline import import_adapter_libraries
from hone.train.logprobs import sequence_logprobs
from hone.train.loop import autocast, to_device
from hone.train.objectives import Loss

REFERENCE_FILE = "reference_logps.safetensors"
START_FILE = "preference_start.json"  # the starting model's held-out numbers, for before/after


def sequences_batch(sequences, pad_id: int, layout: str) -> dict[str, torch.Tensor]:
    """Sequences packed into one row (attention kept inside each) or padded, one per row."""
    return pack_batch(sequences, pad_id, PACK_MULTIPLE) if layout == "pack" else pad_batch(sequences, pad_id)


def pair_batch(items, pad_id: int, layout: str, share_prompt: bool = False) -> dict[str, torch.Tensor]:
    """n pairs -> 2n sequences (chosen first), with `pairs` = n and, once known, `reference` (2n,);
    packed with `share_prompt`, each pair's prompt is computed once (`pack_pairs`)."""
    if layout == "pack" and share_prompt:
        batch = pack_pairs([i.chosen for i in items], [i.rejected for i in items], pad_id, PACK_MULTIPLE)
    else:
        batch = sequences_batch([i.chosen for i in items] + [i.rejected for i in items], pad_id, layout)
    batch["pairs"] = torch.tensor(len(items))
    if all(i.reference is not None for i in items):
        batch["reference"] = torch.tensor([i.reference[0] for i in items] + [i.reference[1] for i in items])
    return batch


def reference_logprobs(model, batch: dict[str, torch.Tensor], n_sequences: int) -> torch.Tensor:
    """The reference's summed log-probabilities: precomputed ones, else the model with its adapter off."""
    if "reference" in batch:
        return batch["reference"].float()
    if not hasattr(model, "disable_adapter"):
        raise HoneError("preference.reference=live needs an adapter (the reference is the base with it switched off)",
                        "set preference.reference=precompute for full fine-tuning")
    with torch.no_grad(), model.disable_adapter():
        return sequence_logprobs(model, batch, n_sequences)[0]


def pair_metrics(chosen_logps, rejected_logps, chosen_rewards, rejected_rewards) -> dict[str, float]:
    """Summed over the batch's pairs (the loop divides by the pair count): preference accuracy
    (implicit reward of chosen above rejected), reward margin, rewards, log-probabilities, and
    the policy's own verdict (`logp_accuracy`: the chosen answer more likely than the rejected)."""
    return {
        "accuracy": float((chosen_rewards > rejected_rewards).sum()),
        "margin": float((chosen_rewards - rejected_rewards).sum()),
        "chosen_reward": float(chosen_rewards.sum()),
        "rejected_reward": float(rejected_rewards.sum()),
        "chosen_logp": float(chosen_logps.sum()),
        "rejected_logp": float(rejected_logps.sum()),
        "logp_accuracy": float((chosen_logps > rejected_logps).sum()),
    }


@dataclasses.dataclass
class PairObjective:
    """A pairwise objective: `pair_loss(args, policy, reference, tokens)` -> (loss per pair,
    chosen rewards, rejected rewards), where policy/reference/tokens are (chosen, rejected) tuples
    of (n,) tensors (reference is None when `needs_reference` is False)."""

    name: str
    pair_loss: object
    needs_reference: bool = True
    args: PreferenceArgs = dataclasses.field(default_factory=PreferenceArgs)
    tokenize = staticmethod(tokenize_pairs)
    last_eval: tuple[float, float] | None = None  # (chosen log-probability, margin) at the previous evaluation
    share_prompt: bool = False  # set by `start` from preference.share_prompt and the attention in use

    def count(self, item) -> int:
        return 1  # the loss is a mean over pairs

    def batch(self, items, pad_id: int, layout: str) -> dict[str, torch.Tensor]:
        return pair_batch(items, pad_id, layout, self.share_prompt)

    def loss(self, model, batch) -> Loss:
        n = int(batch["pairs"])
        logps, tokens = sequence_logprobs(model, batch, 2 * n)
        policy, counts = (logps[:n], logps[n:]), (tokens[:n], tokens[n:])
        reference = None
        if self.needs_reference:
            ref = reference_logprobs(model, batch, 2 * n)
            reference = (ref[:n], ref[n:])
        losses, chosen_rewards, rejected_rewards = self.pair_loss(self.args, policy, reference, counts)
        if self.args.sft_weight:
            losses = losses - self.args.sft_weight * policy[0] / counts[0].clamp(min=1)
        return Loss(losses.sum(), n, pair_metrics(*(p.detach() for p in policy), chosen_rewards.detach(), rejected_rewards.detach()))

    def start(self, setup, config: RunConfig, train, evals, resume: bool):
        """Configure from `config.preference`, load the starting adapter, settle the reference."""
        share = config.preference.share_prompt and shares_prefixes(setup.device)
        objective = dataclasses.replace(self, args=config.preference, last_eval=None, share_prompt=share)
        setup = dataclasses.replace(setup, objective=objective)
        if config.preference.init_from:
            load_starting_adapter(setup.model, config)
        if self.needs_reference:
            settle_reference(setup, config, train, evals, resume)
        before = report_start(setup, config, evals, batch_size=config.train.batch_size)
        if before:  # the first evaluation is compared with the starting model (margin 0 there)
            objective.last_eval = (before["chosen_logp"], 0.0)
        return setup

    def watch_eval(self, record: dict) -> None:
        watch_chosen_logp(self, record)


def watch_chosen_logp(objective, record: dict) -> None:
    """Warn when the held-out chosen log-probability falls while the margin rises: the model
    is pushing the rejected answers down faster than it keeps the chosen ones up."""
    if "eval_chosen_logp" not in record or "eval_margin" not in record:
        return
    now = (record["eval_chosen_logp"], record["eval_margin"])
    if objective.last_eval is not None and now[0] < objective.last_eval[0] and now[1] > objective.last_eval[1]:
        print(f"warning at step {record.get('step')}: the held-out chosen log-probability fell "
              f"{objective.last_eval[0]:.3f} -> {now[0]:.3f} while the reward margin rose {objective.last_eval[1]:.3f} -> "
              f"{now[1]:.3f}: chosen answers are getting less likely too; consider preference.sft_weight "
              "(e.g. 0.1-1), a lower learning rate or fewer steps")
    objective.last_eval = now


# --- the reference, computed once ---

def settle_reference(setup, config: RunConfig, train, evals, resume: bool) -> None:
    """Give every item its reference values: from the run folder on resume, else scored now."""
    if config.preference.reference == "live":
        if not hasattr(setup.model, "disable_adapter") or config.preference.init_from:
            raise HoneError("preference.reference=live scores with the adapter switched off, which is the base model, "
                            "not the starting point of full fine-tuning or of preference.init_from",
                            "set preference.reference=precompute")
        return
    path = Path(setup.run_dir) / REFERENCE_FILE
    print_prefix = "reference log-probabilities:"
    fingerprint = items_fingerprint(train, evals)
    if resume and path.is_file():
        tensors, saved = load_file(path), read_metadata(path)
        if saved.get("fingerprint") != fingerprint:
            raise HoneError(f"{path} was computed for other data than this run's",
                            "resume with the run's own data and settings, or start a new run")
        attach(train, tensors["train"]), attach(evals, tensors["eval"])
        print(f"{print_prefix} read from {path}")
        return
    tensors = {"train": score_items(setup, train, config), "eval": score_items(setup, evals, config)}
    attach(train, tensors["train"]), attach(evals, tensors["eval"])
    save_file(tensors, path, metadata={"fingerprint": fingerprint})
    print(f"{print_prefix} {len(train) + len(evals)} items scored once with the starting model -> {path}")


def read_metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as handle:
        return handle.metadata() or {}


def items_fingerprint(train, evals) -> str:
    digest = hashlib.sha256()
    for item in list(train) + list(evals):
        for sequence in item.sequences():
            digest.update(json.dumps(sequence.input_ids).encode())
    return digest.hexdigest()


def attach(items, values: torch.Tensor) -> None:
    for item, (first, second) in zip(items, values.tolist()):
        item.reference = (first, second)


@torch.no_grad()
def score_items(setup, items, config: RunConfig) -> torch.Tensor:
    """(len(items), 2): each item's two sequences' summed log-probabilities under the model as it is."""
    if not items:
        return torch.zeros(0, 2)
    model, layout = setup.model, "pack" if config.train.packing else "pad"
    share = layout == "pack" and config.preference.share_prompt and shares_prefixes(setup.device)
    was_training = model.training
    model.eval()
    out = []
    with engine(model, setup.device, setup.compute_dtype, packing=config.train.packing):
        for start in range(0, len(items), config.train.batch_size):
            chunk = items[start : start + config.train.batch_size]
            firsts, seconds = [i.sequences()[0] for i in chunk], [i.sequences()[1] for i in chunk]
            batch = pack_pairs(firsts, seconds, setup.pad_id, PACK_MULTIPLE) if share else \
                sequences_batch(firsts + seconds, setup.pad_id, layout)  # KTO's answer and mismatched answer share a prompt too
            batch = to_device(batch, setup.device)
            with autocast(setup):
                logps = sequence_logprobs(model, batch, 2 * len(chunk))[0].cpu()
            out.append(torch.stack([logps[: len(chunk)], logps[len(chunk) :]], dim=1))
    model.train(was_training)
    return torch.cat(out)


def report_start(setup, config: RunConfig, evals, batch_size: int) -> dict | None:
    """The starting model's held-out preference numbers (the 'before' of before/after), printed
    and kept in the run folder."""
    if not evals or not hasattr(evals[0], "chosen"):
        return None
    values = torch.tensor([i.reference for i in evals]) if all(i.reference for i in evals) else score_items(setup, evals, config)
    numbers = {"eval_pairs": len(evals), "logp_accuracy": float((values[:, 0] > values[:, 1]).float().mean()),
               "chosen_logp": float(values[:, 0].mean()), "rejected_logp": float(values[:, 1].mean())}
    (Path(setup.run_dir) / START_FILE).write_text(json.dumps(numbers, indent=1))
    print(f"starting model on {len(evals)} held-out pairs: chosen more likely than rejected in "
          f"{numbers['logp_accuracy']:.1%}")
    return numbers


# --- the starting point: a finished LoRA run ---

def starting_adapter_files(model, run: Path, setting: str, example: str, method_hint: str = "") -> tuple[Path, dict]:
    """`run`'s adapter weights file and its adapter_config, once both exist and the model about to
    train has an adapter to receive them; else a one-line error naming `setting`."""
    adapter_file, adapter_config = run / "adapter_model.safetensors", run / "adapter_config.json"
    if not adapter_file.is_file() or not adapter_config.is_file():
        raise HoneError(f"{setting}: {run} holds no LoRA adapter (adapter_model.safetensors)",
                        f"point it at a finished LoRA run folder, e.g. {example}")
    if not hasattr(model, "peft_config"):
        raise HoneError(f"{setting} starts from a LoRA adapter, but adapter.method trains no adapter",
                        f"set adapter.method=lora{method_hint}")
    return adapter_file, json.loads(adapter_config.read_text())


def load_starting_adapter(model, config: RunConfig) -> None:
    """Copy `preference.init_from`'s adapter weights into the adapter about to train; its shape
    (rank, alpha, targets) and base model must be this run's."""
    run = Path(config.preference.init_from)
    adapter_file, saved = starting_adapter_files(model, run, "preference.init_from", "the quickstart's run",
                                                 " (with the run's rank and alpha)")
    mine = next(iter(model.peft_config.values()))
    for key, value in (("lora_rank", saved.get("r")), ("lora_alpha", saved.get("lora_alpha"))):
        if float(value) != float(getattr(config.adapter, key)):
            raise HoneError(f"preference.init_from: {run} has {key} {value}, this run adapter.{key} "
                            f"{getattr(config.adapter, key)}", f"set adapter.{key}={value}")
    if set(saved.get("target_modules") or []) != set(mine.target_modules or []):
        raise HoneError(f"preference.init_from: {run} adapts {sorted(saved.get('target_modules') or [])}, this run "
                        f"{sorted(mine.target_modules or [])}", "set adapter.target_modules to the run's")
    import_adapter_libraries()
    from peft import set_peft_model_state_dict  # noqa: PLC0415 - PEFT is imported with the hub offline, above

    result = set_peft_model_state_dict(model, load_file(adapter_file))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing:
        raise HoneError(f"preference.init_from: {run}'s adapter lacks {len(missing)} of this run's tensors, e.g. {missing[0]}",
                        "check that the run was trained on the same model.path")
    print(f"starting from the adapter of {run}")


def logsigmoid_pair(beta_delta: torch.Tensor, smoothing: float) -> torch.Tensor:
    """-log sigmoid(x) with conservative label smoothing (cDPO): the loss when a share
    `smoothing` of the labels is assumed flipped."""
    return -(1 - smoothing) * F.logsigmoid(beta_delta) - smoothing * F.logsigmoid(-beta_delta)
