"""Distillation losses: a divergence between teacher and student next-token distributions,
computed a chunk of rows at a time so the student's `tokens x vocab` logits are never held
for the whole batch (as `hone.train.loss` does for cross-entropy).

The divergences, per scored token, over whatever categories both sides share (the whole
vocabulary, or the teacher's top-k plus one "rest" bucket):
    forward_kl   KL(teacher || student) = sum p_t (log p_t - log p_s)
    reverse_kl   KL(student || teacher) = sum p_s (log p_s - log p_t)
    jsd          beta * KL(teacher || m) + (1 - beta) * KL(student || m),  m = beta p_t + (1 - beta) p_s
Both distributions are softened by the temperature first. This is TRL's `generalized_jsd_loss`
(GKDTrainer) summed instead of averaged, with no temperature-squared factor (as TRL), so jsd
with beta 0 is forward KL and beta 1 reverse KL (tested against TRL to 1e-5).

Top-k teacher. With the teacher's k most likely tokens cached, both sides are coarse-grained
to k + 1 categories: the k tokens and the rest of the vocabulary as one bucket (its
log-probability is the log-sum-exp of the other logits). Unlike renormalising both on the k
tokens, the rest bucket still penalises student mass outside the teacher's top-k, and with
k = V the divergence equals the full-vocabulary one. It is a lower bound on the full
divergence (coarse-graining never increases a KL).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from hone.data.render import IGNORE

REST_FLOOR = math.log(1e-30)  # the rest bucket's log-probability when the top-k hold (nearly) all the mass
LOSSES = ("forward_kl", "reverse_kl", "jsd")


def kl(p_logp: torch.Tensor, q_logp: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dim from log-probabilities; 0 * log 0 counts as 0."""
    p = p_logp.exp()
    return torch.where(p > 0, p * (p_logp - q_logp), torch.zeros_like(p)).sum(-1)


def divergence(student_logp: torch.Tensor, teacher_logp: torch.Tensor, loss: str, beta: float) -> torch.Tensor:
    """Per-row divergence (n,) between log-distributions (n, K) of student and teacher."""
    if loss == "forward_kl" or (loss == "jsd" and beta == 0):
        return kl(teacher_logp, student_logp)
    if loss == "reverse_kl" or (loss == "jsd" and beta == 1):
        return kl(student_logp, teacher_logp)
    if loss != "jsd":
        raise ValueError(f"unknown divergence {loss!r}; one of {LOSSES}")
    mixture = torch.logaddexp(student_logp + math.log1p(-beta), teacher_logp + math.log(beta))  # n, K
    return beta * kl(teacher_logp, mixture) + (1 - beta) * kl(student_logp, mixture)


def coarse_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(n, k + 1) log-probabilities of `ids` (n, k) under softmax(logits) (n, V), and of every
    other token together as the last column."""
    total = torch.logsumexp(logits, dim=-1, keepdim=True)  # n, 1
    picked = logits.gather(1, ids)  # n, k
    rest = torch.logsumexp(logits.scatter(1, ids, float("-inf")), dim=-1, keepdim=True)  # n, 1
    return torch.cat([picked, rest.clamp(min=REST_FLOOR + total)], dim=1) - total


def teacher_topk(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities (n, k + 1) fp32, token ids (n, k) int32) of the teacher's k most likely
    tokens at `temperature`, the rest of the vocabulary as the last column."""
    scaled = logits.float() / temperature
    ids = scaled.topk(min(k, scaled.shape[-1]), dim=-1).indices
    return coarse_logprobs(scaled, ids), ids.to(torch.int32)


def student_terms(logits: torch.Tensor, goal: torch.Tensor, teacher: dict[str, torch.Tensor], loss: str, beta: float,
                  temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed divergence, summed cross-entropy) of student logits (n, V) fp32 against the
    teacher's view of the same rows: `logits` (n, V) when it runs live, else cached top-k
    `logp` (n, k + 1) and `ids` (n, k). Rows whose `goal` is IGNORE add 0 to both."""
    scored = goal != IGNORE
    cross_entropy = F.cross_entropy(logits, goal, reduction="sum", ignore_index=IGNORE)
    scaled = logits / temperature
    if "logits" in teacher:
        student = F.log_softmax(scaled, dim=-1)
        target = F.log_softmax(teacher["logits"].float() / temperature, dim=-1)
    else:
        student = coarse_logprobs(scaled, teacher["ids"].long())
        target = teacher["logp"].float()
    per_row = divergence(student, target, loss, beta)
    return (per_row * scored).sum(), cross_entropy


def chunked_terms(rows: torch.Tensor, wanted: torch.Tensor, head, softcap, teacher: dict, loss: str, beta: float,
                  temperature: float, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`student_terms` over student hidden rows (N, C) a chunk of `step` rows at a time.
    `teacher` holds per-row tensors (N, ...): `logp` + `ids` (cached top-k), or `rows` (N, C_t)
    with `head` (the live teacher's output layer, whose logits are made chunk by chunk too).
    With gradients each chunk is recomputed in backward (its logits are not kept)."""
    total_div = rows.new_zeros((), dtype=torch.float32)
    total_ce = rows.new_zeros((), dtype=torch.float32)
    for start in range(0, rows.shape[0], step):
        part = slice(start, start + step)
        view = {key: value[part] for key, value in teacher.items() if key != "head"}
        args = (rows[part], wanted[part], head, softcap, view, teacher.get("head"), loss, beta, temperature)
        if torch.is_grad_enabled():
            div, ce = checkpoint(_chunk, *args, use_reentrant=False)
        else:
            div, ce = _chunk(*args)
        total_div, total_ce = total_div + div, total_ce + ce
    return total_div, total_ce


def _chunk(rows, goal, head, softcap, view, teacher_head, loss, beta, temperature):
    logits = head(rows).float()  # n, V
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    if "rows" in view:  # the live teacher's logits for the same rows, without gradients
        with torch.no_grad():
            view = {"logits": teacher_head(view["rows"]).float()}
    return student_terms(logits, goal, view, loss, beta, temperature)
