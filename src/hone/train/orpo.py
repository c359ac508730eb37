"""`train.objective: orpo`: odds-ratio preference optimisation on top of SFT, reference-free.

Per pair: the chosen answer's mean next-token loss, minus `beta` times log sigmoid of the log
odds ratio, where an answer's odds are p / (1 - p) with p its mean per-token probability
(exp of the mean log-probability). The SFT term covers the chosen answer's tokens, as in the
ORPO paper; TRL's experimental ORPO trainer also scores the prompt's tokens there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hone.config import PreferenceArgs
from hone.train import objectives
from hone.train.preference import PairObjective


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate near 0 and far below it."""
    return torch.where(x > -0.693, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_pair_loss(args: PreferenceArgs, policy, reference, tokens):
    chosen, rejected = policy[0] / tokens[0].clamp(min=1), policy[1] / tokens[1].clamp(min=1)
    log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
    losses = -chosen - args.beta * F.logsigmoid(log_odds)
    return losses, args.beta * chosen, args.beta * rejected


ORPO = objectives.register(PairObjective("orpo", orpo_pair_loss, needs_reference=False))
