"""`train.objective: simpo`: SimPO, reference-free and length-normalised.

The reward of an answer is `beta` times its mean per-token log-probability; the loss asks the
chosen reward to clear the rejected one by `gamma`: -log sigmoid(beta * (mean_c - mean_r) - gamma),
with conservative label smoothing when `label_smoothing` > 0 (TRL's CPO trainer, loss_type simpo).
No reference model: nothing is precomputed and nothing is switched off.
"""

from __future__ import annotations

from hone.config import PreferenceArgs
from hone.train import objectives
from hone.train.preference import PairObjective, logsigmoid_pair


def simpo_pair_loss(args: PreferenceArgs, policy, reference, tokens):
    chosen, rejected = policy[0] / tokens[0].clamp(min=1), policy[1] / tokens[1].clamp(min=1)
    logits = chosen - rejected - args.gamma / args.beta
    return logsigmoid_pair(args.beta * logits, args.label_smoothing), args.beta * chosen, args.beta * rejected


SIMPO = objectives.register(PairObjective("simpo", simpo_pair_loss, needs_reference=False))
