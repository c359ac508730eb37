"""`train.objective: distill`: knowledge distillation from a teacher model (`distill.*`).

Per labelled answer token the loss is
    weight * divergence(teacher, student) + (1 - weight) * cross-entropy(student, label)
summed, the loop dividing by the answer tokens of the step (`hone.train.divergence` has the
divergences and the top-k treatment). The teacher never trains and is held in the cheapest
dtype the device multiplies fast (`distill.teacher_dtype`).

Where the teacher's view comes from:
- `top_k > 0` (default): computed once before training and cached in the run folder
  (`hone.train.teacher_outputs`); the teacher is unloaded before the first step.
- `top_k = 0`: the teacher runs live on each batch, over the full vocabulary. Needed by
  on-policy distillation (GKD, `on_policy_ratio`): in that share of micro-batches the student
  samples answers to the batch's prompts, the teacher scores them, and the loss is the
  divergence alone (cross-entropy against one's own sample teaches nothing), scaled so the
  micro-batch weighs what its teacher-forced answers would.
- `mode: sequence`: the teacher answers the prompts once, before training, and the student
  learns those answers by cross-entropy (works across vocabularies).
- `transfer`: prompts without answers, which the teacher answers once; they join the training
  rows (in logits mode with the teacher's top-k on them like every row).

Logit distillation compares distributions token by token, so teacher and student must share
the vocabulary: checked first, before any weight is read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random

import torch
import torch.nn.functional as F

from hone.config import DistillArgs, RunConfig
from hone.data.collate import PACK_MULTIPLE, pack_batch, pad_batch
from hone.data.prepare import prepare_run_data
from hone.data.render import IGNORE, Tokenized
from hone.engine import engine
from hone.errors import HoneError
from hone.model.generate import GenerationArgs, generate_batch, stop_token_ids
from hone.model.load import load_tokenizer
from hone.model.teacher import load_whole, vocabulary_of
from hone.train import objectives
from hone.train.divergence import chunked_terms
from hone.train.logprobs import decoder_hidden
from hone.train.loss import CHUNK_ELEMENTS, ROWS_MULTIPLE, split_model
from hone.train.teacher_outputs import (answer_rows, pad_rows, settle_topk, teacher_answers, teacher_rows, topk_batch,
                                        transfer_answers)


def check_vocabularies(args: DistillArgs, student_path: str) -> None:
    """Logit distillation needs one vocabulary: the same token -> id map and output size."""
    if not args.teacher_path:
        raise HoneError("train.objective=distill needs a teacher", "set distill.teacher_path=MODEL_OR_RUN_FOLDER")
    if args.mode == "sequence":
        return
    try:
        teacher, teacher_rows_ = vocabulary_of(args.teacher_path)
    except HoneError as exc:
        raise HoneError(f"distill.teacher_path: {exc.message}", "point it at a model folder, hub id or hone run folder") from None
    student, student_rows = vocabulary_of(student_path)
    if teacher != student or teacher_rows_ != student_rows:
        differ = sum(1 for token, index in teacher.items() if student.get(token) != index) + abs(len(student) - len(teacher))
        raise HoneError(f"distill.teacher_path: {args.teacher_path} and the student {student_path} have different vocabularies "
                        f"({len(teacher)} vs {len(student)} tokens, {differ} differ; output rows {teacher_rows_} vs "
                        f"{student_rows}): logits cannot be compared token by token",
                        "set distill.mode=sequence (the student learns the teacher's answers), or pick a student "
                        "with the teacher's tokenizer (`hone derive`)")


def prompts_of(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """Each sequence's ids before its first labelled token (packed or padded batches)."""
    ids, labels = batch["input_ids"], batch["labels"]
    if "seq_lengths" in batch:
        pieces = zip(ids[0].split(batch["seq_lengths"].tolist()), labels[0].split(batch["seq_lengths"].tolist()))
    else:
        mask = batch["attention_mask"].bool()
        pieces = ((row[m], label[m]) for row, label, m in zip(ids, labels, mask))
    prompts = []
    for sequence, label in pieces:
        scored = (label[1:] != IGNORE).nonzero()
        if len(scored):  # filler segments and unscored rows have no answer
            prompts.append(sequence[: int(scored[0]) + 1].tolist())
    return prompts


@dataclasses.dataclass
class Distill:
    name: str = "distill"
    args: DistillArgs = dataclasses.field(default_factory=DistillArgs)
    teacher: object = None
    """The live teacher (top_k 0), inside its own speed-layer engine."""
    stops: list[int] = dataclasses.field(default_factory=list)
    pad_id: int = 0
    seed: int = 0
    rng: random.Random = dataclasses.field(default_factory=lambda: random.Random(0))
    """Which micro-batches go on-policy: re-seeded from (seed, step) at every step, so a resumed
    run chooses as an uninterrupted one would."""
    engines: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)
    """Holds the live teacher's speed layer for the rest of the process (the teacher is never saved)."""

    def count(self, item) -> int:
        return answer_rows(item)

    def batch(self, items, pad_id: int, layout: str) -> dict[str, torch.Tensor]:
        batch = pack_batch(items, pad_id, PACK_MULTIPLE) if layout == "pack" else pad_batch(items, pad_id)
        if all(getattr(item, "teacher", None) is not None for item in items):
            batch.update(topk_batch(items))
        return batch

    def begin_step(self, step: int) -> None:
        if not self.args.on_policy_ratio:
            return
        self.rng = random.Random(self.seed * 1_000_003 + step)
        torch.manual_seed(self.seed * 1_000_003 + step)  # the student's samples too

    def loss(self, model, batch) -> objectives.Loss:
        if self.teacher is not None and model.training and self.rng.random() < self.args.on_policy_ratio:
            return self.on_policy_loss(model, batch)
        return self.forced_loss(model, batch, self.args.weight)

    def forced_loss(self, model, batch, weight: float) -> objectives.Loss:
        """The loss on the batch's own answers (teacher-forced), `weight` on the divergence."""
        _, head, softcap = split_model(model)
        targets = batch["labels"][:, 1:]  # position t predicts token t+1
        keep = targets != IGNORE
        hidden = decoder_hidden(model, batch, keep)  # B, T, C
        rows, wanted = hidden[:, :-1][keep], targets[keep]  # N, C and N
        count = int(wanted.numel())
        padded = count + (-count % ROWS_MULTIPLE)  # a few matmul shapes, not one per batch (hone.train.loss)
        rows, wanted = pad_rows(rows, padded), F.pad(wanted, (0, padded - count), value=IGNORE)
        teacher = self.teacher_view(batch, padded)
        step = max(ROWS_MULTIPLE, CHUNK_ELEMENTS // head.weight.shape[0] // ROWS_MULTIPLE * ROWS_MULTIPLE)
        a = self.args
        divergence, cross_entropy = chunked_terms(rows, wanted, head, softcap, teacher, a.loss, a.beta, a.temperature, step)
        total = weight * divergence + (1 - weight) * cross_entropy
        metrics = {"divergence": float(divergence.detach()), "cross_entropy": float(cross_entropy.detach())}
        return objectives.Loss(total, count, metrics)

    def teacher_view(self, batch, rows: int) -> dict:
        """Per scored row: the cached top-k, or the live teacher's hidden rows and head."""
        if "teacher_logp" in batch:
            return {"logp": pad_rows(batch["teacher_logp"], rows), "ids": pad_rows(batch["teacher_ids"], rows)}
        if self.teacher is None:
            raise HoneError("distill: a batch without cached teacher outputs and no live teacher",
                            "start the run with train.objective=distill (its start computes them)")
        with torch.no_grad():
            hidden = teacher_rows(self.teacher, batch)
        return {"rows": pad_rows(hidden, rows), "head": split_model(self.teacher)[1]}

    def on_policy_loss(self, model, batch) -> objectives.Loss:
        """GKD: the student answers the batch's prompts (sampled), the teacher scores them."""
        forced = int((batch["labels"][:, 1:] != IGNORE).sum())
        prompts = prompts_of(batch)
        model.eval()
        generation = GenerationArgs(max_new_tokens=self.args.max_new_tokens, temperature=1.0)
        samples = generate_batch(model, prompts, generation, self.stops, self.pad_id, batch["input_ids"].device)
        model.train()
        items = [sampled_item(prompt, sample, self.stops) for prompt, sample in zip(prompts, samples)]
        sampled = {k: v.to(batch["input_ids"].device) for k, v in pad_batch(items, self.pad_id).items()}
        out = self.forced_loss(model, sampled, weight=1.0)
        scale = forced / max(out.count, 1)  # the micro-batch weighs what its forced answers would
        metrics = {key: value * scale for key, value in out.metrics.items()}
        return objectives.Loss(out.total * scale, forced, metrics | {"on_policy": float(forced)})  # on_policy: share of the step

    def check(self, config: RunConfig) -> None:
        """Before any data or weights are read: a teacher, one vocabulary, a live teacher for GKD."""
        args = config.distill
        check_vocabularies(args, config.model.path)
        if args.on_policy_ratio and (args.top_k or args.mode == "sequence"):
            raise HoneError("distill.on_policy_ratio needs the live teacher (it scores the student's own samples)",
                            "set distill.top_k=0 and distill.mode=logits, or distill.on_policy_ratio=0")

    def start(self, setup, config: RunConfig, train, evals, resume: bool):
        args = config.distill
        self.check(config)  # again: the seam may be driven without `hone train`
        objective = dataclasses.replace(self, args=args, seed=config.train.seed, rng=random.Random(config.train.seed),
                                        pad_id=setup.pad_id,
                                        engines=contextlib.ExitStack())
        tokenizer = data = None
        if args.mode == "sequence" or args.transfer:  # the run's examples themselves, not its items: prompts to answer
            tokenizer = load_tokenizer(config.model)
            data = prepare_run_data(config.data, config.train.seed, tokenizer)
        extra = transfer_answers(config, setup, tokenizer, data.eval_examples) if args.transfer else []
        if extra:
            print(f"transfer set: {len(extra)} teacher answers join the training rows")
        if args.mode == "sequence":
            train[:] = teacher_answers(config, setup, tokenizer, data.train_examples) + extra  # the loop trains on these
            print(f"sequence-level distillation: {len(train)} teacher answers to learn")
            return dataclasses.replace(setup, objective=objectives.CAUSAL_LM)
        train.extend(extra)
        if not args.weight and not args.on_policy_ratio:  # no divergence term: the teacher's distributions go unused
            print("distill.weight=0: cross-entropy alone on the training rows (the teacher's top-k is not computed)")
            return dataclasses.replace(setup, objective=objectives.CAUSAL_LM)
        if args.top_k:
            settle_topk(args, setup, {"train": train, "eval": evals}, config.train.batch_size)
        else:
            objective.teacher, tokenizer, compute = load_whole(args.teacher_path, args.teacher_dtype)
            objective.engines.enter_context(engine(objective.teacher, setup.device, compute, packing=True, fused_layers=False))
            objective.stops = stop_token_ids(tokenizer, objective.teacher)
        return dataclasses.replace(setup, objective=objective)


def sampled_item(prompt: list[int], sample: list[int], stops: list[int]) -> Tokenized:
    """Prompt + the student's sample up to its first stop token (kept: ending is learnt too)."""
    cut = next((i + 1 for i, token in enumerate(sample) if token in stops), len(sample))
    answer = sample[:cut] or sample[:1]
    return Tokenized(prompt + answer, [IGNORE] * len(prompt) + answer)


DISTILL = objectives.register(Distill())
