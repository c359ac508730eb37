"""The objective seam: the loop trains whatever objective it is given, defined here in the
test file alone, with eval, metrics, checkpoints and resume, and `hone train` selects it."""

import json
import random
import shutil

import pytest
import torch
import torch.nn.functional as F

import hone.train.loop as loop
from hone.cli import main
from hone.config import AdapterArgs, ModelArgs, TrainArgs
from hone.data.collate import pad_batch
from hone.data.render import IGNORE, Tokenized
from hone.errors import HoneError
from hone.model.adapters import apply_method
from hone.model.load import load_model
from hone.train import objectives
from hone.train.loss import token_loss
from hone.train.metrics import read_metrics


class FirstAnswerToken:
    """A toy objective: cross-entropy of each example's first labelled token only (one unit
    per example), padded batches whatever the layout, and its accuracy as a metric."""

    name = "first_answer_token"

    def count(self, item) -> int:
        return 1

    def batch(self, items, pad_id, layout):
        batch = pad_batch(items, pad_id)
        labelled = batch["labels"] != IGNORE
        batch["first"] = labelled.int().argmax(dim=1)  # B: position of the first labelled token
        return batch

    def loss(self, model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # B, T, V
        rows = torch.arange(len(batch["first"]))
        predicted = logits[rows, batch["first"] - 1].float()  # B, V: the position before predicts it
        target = batch["labels"][rows, batch["first"]]
        total = F.cross_entropy(predicted, target, reduction="sum")
        correct = float((predicted.argmax(-1) == target).sum())
        return objectives.Loss(total, len(target), {"first_token_accuracy": correct})


@pytest.fixture
def toy_objective():
    objective = objectives.register(FirstAnswerToken())
    yield objective
    objectives.unregister(objective.name)


def items(n=24, seed=0):
    """Each answer starts with the same token: quickly learnable."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(5, 300) for _ in range(rng.randint(3, 12))]
        answer = [7, rng.randrange(5, 300)]
        out.append(Tokenized(prompt + answer, [IGNORE] * len(prompt) + answer))
    return out


def lora(folder):
    model = load_model(ModelArgs(path=str(folder), dtype="float32"))
    torch.manual_seed(0)
    return apply_method(model, AdapterArgs(method="lora", lora_rank=8))


def test_the_loop_trains_a_toy_objective_with_eval_metrics_checkpoints_and_resume(tiny_llama, tmp_path, toy_objective):
    train, evals = items(), items(8, seed=1)
    args = TrainArgs(epochs=12, batch_size=8, learning_rate=1e-2, warmup_ratio=0, eval_every=6, save_every=18,
                     progress=False)
    setup = loop.Setup(lora(tiny_llama), 3, torch.device("cpu"), torch.float32, tmp_path / "run", toy_objective)
    state = loop.fit(setup, train, evals, args)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert state.step == 36 and state.trained_tokens == 12 * len(train)  # one unit per example, as count() says
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
    assert all(0 <= r["first_token_accuracy"] <= 1 for r in rows) and rows[-1]["first_token_accuracy"] > 0.5
    assert any("eval_loss" in r for r in rows)
    # its eval loss is the objective's, not a token loss
    with torch.no_grad():
        want = sum(float(toy_objective.loss(setup.model, toy_objective.batch([i], 3, "pad")).total) for i in evals) / len(evals)
    assert loop.evaluate(setup, evals, 8) == pytest.approx(want, rel=1e-4)
    # resuming from the step-18 checkpoint ends where the uninterrupted run did
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "run" / "checkpoints" / "step-0000018", tmp_path / "resumed" / "checkpoints" / "step-0000018")
    resumed = loop.Setup(lora(tiny_llama), 3, torch.device("cpu"), torch.float32, tmp_path / "resumed", toy_objective)
    assert loop.fit(resumed, train, evals, args, resume=True).step == 36
    for (name, a), b in zip(setup.model.named_parameters(), resumed.model.parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_hone_train_selects_a_registered_objective(tiny_llama, chat_file, tmp_path, toy_objective):
    run = tmp_path / "run"
    code = main(["train", f"model.path={tiny_llama}", f"data.train={chat_file}", f"train.output_dir={run}",
                 "model.dtype=float32", "train.max_steps=4", "train.progress=false", "eval.compare=false",
                 "train.objective=first_answer_token"])
    assert code == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "first_token_accuracy" in rows[0] and rows[-1]["step"] == 4


def test_an_unknown_objective_is_a_one_line_error_naming_the_key():
    with pytest.raises(HoneError, match="train.objective"):
        objectives.get("no_such_objective")


def test_causal_lm_is_the_token_loss_of_its_batch(tiny_llama):
    model = lora(tiny_llama)
    batch = objectives.CAUSAL_LM.batch(items(6), 3, "pad")
    out = objectives.CAUSAL_LM.loss(model, batch)
    total, count = token_loss(model, batch)
    assert count == out.count == sum(objectives.CAUSAL_LM.count(i) for i in items(6)) and torch.equal(total, out.total)
