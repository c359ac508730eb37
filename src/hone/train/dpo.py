"""`train.objective: dpo`: Direct Preference Optimization and its loss variants.

With the implicit reward `r = beta * (log pi(answer) - log pi_ref(answer))` (summed over the
answer's tokens) and `delta = (r_chosen - r_rejected) / beta`, `preference.loss` picks:
  sigmoid  -log sigmoid(beta * delta)  (DPO; with label_smoothing, conservative DPO)
  ipo      (delta' - 1 / (2 beta))^2 with delta' from per-token-mean log-ratios (IPO, as TRL normalises it)
  hinge    max(0, 1 - beta * delta)  (SLiC)
  robust   the unbiased loss under a share `label_smoothing` of flipped labels (rDPO)
`preference.sft_weight` adds the chosen answer's mean next-token loss (see hone.train.preference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hone.config import PreferenceArgs
from hone.train import objectives
from hone.train.preference import PairObjective, logsigmoid_pair


def dpo_pair_loss(args: PreferenceArgs, policy, reference, tokens):
    """(loss per pair, chosen rewards, rejected rewards), each (n,)."""
    chosen_ratio, rejected_ratio = policy[0] - reference[0], policy[1] - reference[1]
    delta, beta, smoothing = chosen_ratio - rejected_ratio, args.beta, args.label_smoothing
    if args.loss == "sigmoid":
        losses = logsigmoid_pair(beta * delta, smoothing)
    elif args.loss == "hinge":
        losses = torch.relu(1 - beta * delta)
    elif args.loss == "ipo":
        per_token = chosen_ratio / tokens[0].clamp(min=1) - rejected_ratio / tokens[1].clamp(min=1)
        losses = (per_token - 1 / (2 * beta)) ** 2
    else:  # robust
        losses = (-(1 - smoothing) * F.logsigmoid(beta * delta) + smoothing * F.logsigmoid(-beta * delta)) / (1 - 2 * smoothing)
    return losses, beta * chosen_ratio, beta * rejected_ratio


DPO = objectives.register(PairObjective("dpo", dpo_pair_loss, needs_reference=True))
