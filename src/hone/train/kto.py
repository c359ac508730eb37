"""`train.objective: kto`: Kahneman-Tversky Optimisation, for answers labelled desirable or not
(unpaired rows; preference pairs are split into one of each).

With the log-ratio `l = log pi(answer) - log pi_ref(answer)` and a batch estimate of the KL
between policy and reference, `z = mean(log pi(mismatched) - log pi_ref(mismatched))` clamped
at 0 and not differentiated (each item's prompt with another item's answer, fixed when the
data is tokenized, see `hone.data.pairs.tokenize_unpaired`), the loss of an item is
  desirable:   desirable_weight   * (1 - sigmoid(beta * (l - z)))
  undesirable: undesirable_weight * (1 - sigmoid(beta * (z - l)))
averaged over items, as TRL's KTOTrainer computes it. The mismatched answers run in a second,
gradient-free pass (their only use is the estimate).
"""

from __future__ import annotations

import dataclasses

import torch

from hone.config import PreferenceArgs, RunConfig
from hone.data.pairs import tokenize_unpaired
from hone.train import objectives
from hone.train.logprobs import sequence_logprobs
from hone.train.preference import load_starting_adapter, settle_reference, sequences_batch

KL = "kl_"  # prefix of the mismatched sequences' tensors in a batch


def kto_losses(args: PreferenceArgs, logratios: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
    """Loss per item (n,) from log-ratios (n,), labels (n,) bool and the KL estimate (scalar)."""
    good = args.desirable_weight * (1 - torch.sigmoid(args.beta * (logratios - kl)))
    bad = args.undesirable_weight * (1 - torch.sigmoid(args.beta * (kl - logratios)))
    return torch.where(desirable, good, bad)


@dataclasses.dataclass
class KTO:
    name: str = "kto"
    args: PreferenceArgs = dataclasses.field(default_factory=PreferenceArgs)
    tokenize = staticmethod(tokenize_unpaired)

    def count(self, item) -> int:
        return 1

    def batch(self, items, pad_id: int, layout: str) -> dict[str, torch.Tensor]:
        batch = sequences_batch([i.answer for i in items], pad_id, layout)
        batch.update({KL + k: v for k, v in sequences_batch([i.mismatched for i in items], pad_id, layout).items()})
        batch["desirable"] = torch.tensor([i.desirable for i in items])
        if all(i.reference is not None for i in items):
            batch["reference"] = torch.tensor([list(i.reference) for i in items])  # n, 2: answer, mismatched
        return batch

    def loss(self, model, batch) -> objectives.Loss:
        n = len(batch["desirable"])
        own = {k: v for k, v in batch.items() if not k.startswith(KL)}
        mismatched = {k[len(KL):]: v for k, v in batch.items() if k.startswith(KL)}
        logps = sequence_logprobs(model, own, n)[0]
        with torch.no_grad():
            kl_logps = sequence_logprobs(model, mismatched, n)[0]
            if "reference" in batch:
                reference, kl_reference = batch["reference"][:, 0].float(), batch["reference"][:, 1].float()
            else:
                with model.disable_adapter():
                    reference = sequence_logprobs(model, own, n)[0]
                    kl_reference = sequence_logprobs(model, mismatched, n)[0]
        kl = (kl_logps - kl_reference).mean().clamp(min=0)
        logratios = logps - reference
        desirable = batch["desirable"].bool()
        losses = kto_losses(self.args, logratios, desirable, kl)
        rewards = self.args.beta * logratios.detach()
        right = torch.where(desirable, rewards > 0, rewards < 0)
        return objectives.Loss(losses.sum(), n, {
            "accuracy": float(right.sum()),  # reward on the label's side of 0
            "margin": float(torch.where(desirable, rewards, -rewards).sum()),
            "kl": float(kl) * n,
            "desirable_logp": float(logps.detach()[desirable].sum()),
            "undesirable_logp": float(logps.detach()[~desirable].sum()),
        })

    def start(self, setup, config: RunConfig, train, evals, resume: bool):
        setup = dataclasses.replace(setup, objective=dataclasses.replace(self, args=config.preference))
        if config.preference.init_from:
            load_starting_adapter(setup.model, config)
        settle_reference(setup, config, train, evals, resume)
        return setup


KTO_OBJECTIVE = objectives.register(KTO())
