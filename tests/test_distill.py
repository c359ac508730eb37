"""Distillation: the divergences equal TRL's, the chunked loss equals a dense one, the teacher's
top-k cache is reused, vocabularies are checked, `hone derive` cuts a loadable student, and
the real CLI distils a tiny model."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hone.config import DistillArgs
from hone.data.prepare import prepare_run_data
from hone.data.render import IGNORE, Tokenized
from hone.errors import HoneError
from hone.train import distill as distill_module
from hone.train import teacher_outputs
from hone.train.distill import Distill, check_vocabularies, prompts_of
from hone.train.divergence import coarse_logprobs, divergence

LOSS_OF_BETA = {0.0: "forward_kl", 0.5: "jsd", 1.0: "reverse_kl"}


@pytest.fixture(scope="module")
def trl_jsd():
    """TRL's `GKDTrainer.generalized_jsd_loss`, compiled from TRL's own source file: importing
    the trainer module pulls in the whole Trainer stack (~10 s), the function needs only torch."""
    import importlib.util

    spec = importlib.util.find_spec("trl")
    source = Path(spec.origin).parent / "experimental" / "gkd" / "gkd_trainer.py"
    tree = ast.parse(source.read_text())
    trainer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GKDTrainer")
    function = next(n for n in trainer.body if isinstance(n, ast.FunctionDef) and n.name == "generalized_jsd_loss")
    function.decorator_list = []
    namespace = {"torch": torch, "F": F}
    exec(compile(ast.Module([function], type_ignores=[]), str(source), "exec"), namespace)  # noqa: S102 - TRL's installed code
    return namespace["generalized_jsd_loss"]


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_divergence_equals_trl_generalized_jsd(trl_jsd, beta, temperature):
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 7, 40), 2 * torch.randn(2, 7, 40)
    labels = torch.randint(0, 40, (2, 7))
    labels[0, :3] = IGNORE
    expected = trl_jsd(student, teacher, labels=labels, beta=beta, temperature=temperature)
    mine = divergence(F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1),
                      LOSS_OF_BETA[beta], beta)
    scored = labels != IGNORE
    assert torch.allclose(mine[scored].sum() / scored.sum(), expected, atol=1e-5)
    jsd = divergence(F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1), "jsd", beta)
    assert torch.allclose(jsd[scored].sum() / scored.sum(), expected, atol=1e-5)


def models(tmp_path_factory, vocab_size=300, seed=1):
    from tiny import make_model
    from transformers import AutoModelForCausalLM

    folder = make_model(tmp_path_factory.mktemp(f"m{vocab_size}_{seed}"), "llama", vocab_size=vocab_size, seed=seed)
    return folder, AutoModelForCausalLM.from_pretrained(folder).eval()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return models(tmp_path_factory, seed=1)


def batch_of(seed=0, n=3):
    generator = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        prompt = torch.randint(4, 300, (int(torch.randint(3, 8, (1,), generator=generator)),), generator=generator).tolist()
        answer = torch.randint(4, 300, (int(torch.randint(4, 10, (1,), generator=generator)),), generator=generator).tolist()
        items.append(Tokenized(prompt + answer, [IGNORE] * len(prompt) + answer))
    return items


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_objective_on_a_tiny_model_equals_trl(trl_jsd, tiny_llama, teacher, beta):
    """The whole objective (live teacher, chunked head, temperature 2) against TRL on the models' dense logits."""
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    items = batch_of()
    args = DistillArgs(teacher_path="x", loss=LOSS_OF_BETA[beta], beta=beta, temperature=2.0, top_k=0, weight=1.0)
    objective = Distill(args=args, teacher=teacher[1])
    batch = objective.batch(items, 3, "pad")
    with torch.no_grad():
        out = objective.loss(student, batch)
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        t = teacher[1](input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    expected = trl_jsd(s, t, labels=batch["labels"][:, 1:], beta=beta, temperature=2.0)
    assert abs(float(out.total) / out.count - float(expected)) < 1e-5


def dense_loss(student, teacher_model, batch, args: DistillArgs):
    """Reference: full logits of both models, no chunks."""
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    with torch.no_grad():
        target = teacher_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    s, t = logits[keep] / args.temperature, target[keep] / args.temperature
    div = divergence(F.log_softmax(s, -1), F.log_softmax(t, -1), args.loss, args.beta).sum()
    ce = F.cross_entropy(logits[keep], labels[keep], reduction="sum")
    return args.weight * div + (1 - args.weight) * ce


def test_chunked_loss_and_gradients_equal_a_dense_reference(tiny_llama, teacher, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(distill_module, "CHUNK_ELEMENTS", 64 * 300)  # several chunks of 64 rows
    monkeypatch.setattr(distill_module, "ROWS_MULTIPLE", 8)
    args = DistillArgs(teacher_path="x", loss="jsd", beta=0.3, temperature=1.5, top_k=0, weight=0.7)
    items = batch_of(n=16)
    student = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="eager")
    objective = Distill(args=args, teacher=teacher[1])
    batch = objective.batch(items, 3, "pad")
    assert int((batch["labels"][:, 1:] != IGNORE).sum()) > 64
    out = objective.loss(student.eval(), batch)
    out.total.backward()
    mine = {n: p.grad.clone() for n, p in student.named_parameters()}
    student.zero_grad()
    expected = dense_loss(student, teacher[1], batch, args)
    expected.backward()
    assert torch.allclose(out.total, expected, rtol=1e-5)
    for name, parameter in student.named_parameters():
        assert torch.allclose(mine[name], parameter.grad, atol=1e-5, rtol=1e-4), name


def test_top_k_with_the_whole_vocabulary_is_the_full_divergence():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 30), torch.randn(5, 30)
    ids = teacher.topk(30).indices
    for loss in ("forward_kl", "reverse_kl", "jsd"):
        full = divergence(F.log_softmax(student, -1), F.log_softmax(teacher, -1), loss, 0.5)
        coarse = divergence(coarse_logprobs(student, ids), coarse_logprobs(teacher, ids), loss, 0.5)
        assert torch.allclose(full, coarse, atol=1e-5), loss
    # k < V: the rest bucket keeps it a lower bound of the full KL, and still counts mass outside the top-k
    few = teacher.topk(4).indices
    coarse = divergence(coarse_logprobs(student, few), coarse_logprobs(teacher, few), "forward_kl", 0)
    assert (coarse <= divergence(F.log_softmax(student, -1), F.log_softmax(teacher, -1), "forward_kl", 0) + 1e-6).all()
    assert torch.allclose(coarse_logprobs(student, few).exp().sum(-1), torch.ones(5))


def test_top_k_cache_round_trip_and_resume_without_the_teacher(tmp_path, teacher, monkeypatch):
    calls = []

    def load_teacher(path, dtype):
        calls.append(path)
        return teacher[1], None, torch.float32

    monkeypatch.setattr(teacher_outputs, "load_whole", load_teacher)
    monkeypatch.setattr(teacher_outputs, "SHARD_ITEMS", 4)
    setup = type("S", (), {"run_dir": tmp_path, "device": torch.device("cpu"), "pad_id": 3})()
    args = DistillArgs(teacher_path="teacher", top_k=5, temperature=2.0)
    train, evals = batch_of(1, 6), batch_of(2, 2)
    assert teacher_outputs.settle_topk(args, setup, {"train": train, "eval": evals}, 4) == {"read": 0, "computed": 3}
    files = sorted((tmp_path / teacher_outputs.CACHE_DIR).glob("*.safetensors"))
    assert [f.name for f in files] == ["eval-00000.safetensors", "train-00000.safetensors", "train-00001.safetensors"]
    # the cached rows are the teacher's own top-k of each item alone (packed rows do not leak), in answer order
    for item in train + evals:
        with torch.no_grad():
            logits = teacher[1](input_ids=torch.tensor([item.input_ids])).logits[0, :-1]
        scored = torch.tensor(item.labels[1:]) != IGNORE
        expected = (logits[scored] / 2.0).log_softmax(-1).topk(5)
        assert torch.equal(item.teacher[1].long(), expected.indices)
        assert torch.allclose(item.teacher[0][:, :5], expected.values, atol=1e-5)
    item = train[0]
    stamps = [f.stat().st_mtime_ns for f in files]
    again, again_evals = batch_of(1, 6), batch_of(2, 2)
    assert teacher_outputs.settle_topk(args, setup, {"train": again, "eval": again_evals}, 4) == {"read": 3, "computed": 0}
    assert calls == ["teacher"]  # the teacher was not loaded again
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert torch.equal(again[0].teacher[0], item.teacher[0])
    # another temperature is another cache: recomputed, not misread
    hotter = dataclasses.replace(args, temperature=1.0)
    assert teacher_outputs.settle_topk(hotter, setup, {"train": again}, 4)["computed"] == 2


def test_cached_top_k_loss_matches_the_live_teacher_with_the_whole_vocabulary(tmp_path, tiny_llama, teacher, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(teacher_outputs, "load_whole", lambda path, dtype: (teacher[1], None, torch.float32))
    setup = type("S", (), {"run_dir": tmp_path, "device": torch.device("cpu"), "pad_id": 3})()
    student = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    items = batch_of(3, 4)
    live = DistillArgs(teacher_path="t", top_k=0, loss="reverse_kl", weight=0.6)
    cached = dataclasses.replace(live, top_k=300)
    teacher_outputs.settle_topk(cached, setup, {"train": items}, 4)
    with torch.no_grad():
        a = Distill(args=live, teacher=teacher[1]).loss(student, Distill(args=live).batch(items, 3, "pack"))
        b = Distill(args=cached).loss(student, Distill(args=cached).batch(items, 3, "pack"))
    assert a.count == b.count
    assert abs(float(a.total) - float(b.total)) < 1e-4 * abs(float(a.total))


def test_a_different_vocabulary_is_a_one_line_error_offering_sequence_mode(tmp_path_factory, tiny_llama):
    other, _ = models(tmp_path_factory, vocab_size=320)
    with pytest.raises(HoneError) as error:
        check_vocabularies(DistillArgs(teacher_path=str(other)), str(tiny_llama))
    assert "distill.mode=sequence" in error.value.line() and "\n" not in error.value.line()
    check_vocabularies(DistillArgs(teacher_path=str(other), mode="sequence"), str(tiny_llama))  # no logits compared
    check_vocabularies(DistillArgs(teacher_path=str(tiny_llama)), str(tiny_llama))


def test_hone_train_checks_the_teacher_before_reading_any_data(tmp_path_factory, tiny_llama):
    from hone.train.commands import resolve_config

    other, _ = models(tmp_path_factory, vocab_size=320)
    settings = [f"model.path={tiny_llama}", "data.train=missing.jsonl", "train.objective=distill"]
    with pytest.raises(HoneError, match="distill.teacher_path"):
        resolve_config(settings[0], settings[1:], None)
    with pytest.raises(HoneError, match="distill.mode=sequence"):
        resolve_config(settings[0], [*settings[1:], f"distill.teacher_path={other}"], None)
    with pytest.raises(HoneError, match="distill.top_k=0"):
        resolve_config(settings[0], [*settings[1:], f"distill.teacher_path={tiny_llama}", "distill.on_policy_ratio=0.5"], None)


def test_prompts_of_packed_and_padded_batches_agree():
    items = batch_of(5, 3)
    expected = [item.input_ids[: item.labels.index(next(l for l in item.labels if l != IGNORE))] for item in items]
    objective = Distill()
    assert prompts_of(objective.batch(items, 3, "pack")) == expected
    assert prompts_of(objective.batch(items, 3, "pad")) == expected


def test_derive_keeps_the_chosen_layers(tmp_path):
    from tiny import make_model
    from transformers import AutoModelForCausalLM

    from hone.model.derive import derive, evenly_spaced

    source = make_model(tmp_path / "teacher", "llama", num_hidden_layers=3)
    summary = derive(str(source), tmp_path / "student", layers=[0, 2])
    assert summary["kept_layers"] == [0, 2] and summary["student_parameters"] < summary["teacher_parameters"]
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "student").eval()
    teacher = AutoModelForCausalLM.from_pretrained(source).eval()
    assert student.config.num_hidden_layers == 2 and (tmp_path / "student" / "tokenizer.json").is_file()
    ids = torch.tensor([[5, 17, 42, 99, 7, 250]])
    with torch.no_grad():  # the teacher's forward through layers 0 and 2 only, by hand
        hidden = teacher.model.embed_tokens(ids)
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        rotary = teacher.model.rotary_emb(hidden, positions)
        mask = torch.full((6, 6), float("-inf")).triu(1)[None, None]
        for index in (0, 2):
            hidden = teacher.model.layers[index](hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        manual = teacher.lm_head(teacher.model.norm(hidden))
        assert torch.allclose(student(ids).logits, manual, atol=1e-5)
        generated = student.generate(ids, max_new_tokens=4, do_sample=False)  # the renumbered KV cache works
    assert generated.shape == (1, 10)
    assert evenly_spaced(4, 2) == [0, 3] and evenly_spaced(5, 3) == [0, 2, 4]
    with pytest.raises(HoneError, match="choose a new --out"):
        derive(str(source), tmp_path / "student", keep=1)


@pytest.mark.slow
def test_cli_distils_a_derived_student(tmp_path, tiny_llama, chat_file):
    from test_train_e2e import common, hone, metrics

    from hone.model.derive import derive

    student = tmp_path / "student"
    derive(str(tiny_llama), student, keep=1)  # `hone derive` itself: test_derive_keeps_the_chosen_layers
    run = tmp_path / "kd"
    hone("train", *common(student, chat_file, run, "adapter.method=full", "train.max_steps=8", "train.eval_every=4",
                          "train.objective=distill", f"distill.teacher_path={tiny_llama}", "distill.top_k=16",
                          "distill.temperature=2", "data.check=false"))
    for name in ("model.safetensors", "config.json", "tokenizer.json", "metrics.jsonl", "teacher_topk/train-00000.safetensors"):
        assert (run / name).is_file(), name
    rows = [r for r in metrics(run) if "loss" in r]
    assert {"divergence", "cross_entropy"} <= set(rows[0]) and "eval_divergence" in metrics(run)[-1]
    assert sum(r["loss"] for r in rows[-2:]) < sum(r["loss"] for r in rows[:2])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 8


def test_on_policy_batches_score_the_students_own_samples(tiny_llama, teacher):
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(tiny_llama).train()
    args = DistillArgs(teacher_path="t", top_k=0, on_policy_ratio=1.0, max_new_tokens=5)
    objective = Distill(args=args, teacher=teacher[1], stops=[0], pad_id=3)
    items = batch_of(6, 3)
    batch = objective.batch(items, 3, "pack")
    out = objective.loss(student, batch)
    assert out.count == sum(objective.count(item) for item in items)  # weighs what the forced answers would
    assert out.metrics["on_policy"] == out.count and torch.isfinite(out.total)
    out.total.backward()
    assert student.training and any(p.grad is not None for p in student.parameters())
    with torch.no_grad():  # in eval the batch's own answers are scored
        assert "on_policy" not in objective.loss(student.eval(), batch).metrics


def test_sequence_mode_trains_on_the_teachers_answers_checked_by_the_doctor(tmp_path, tmp_path_factory, teacher,
                                                                             chat_file, monkeypatch):
    from hone.config import ModelArgs, load_config
    from hone.model.generate import Generation
    from hone.model.load import load_tokenizer

    student_path, _ = models(tmp_path_factory, vocab_size=320, seed=4)
    calls = []

    def answers(model, tokenizer, prompts, generation):
        calls.append(len(prompts))
        return [Generation("" if i == 0 else "yes thanks", 3, True) for i in range(len(prompts))]  # one empty: rejected

    teacher_tokenizer = load_tokenizer(ModelArgs(path=str(teacher[0])))
    monkeypatch.setattr(teacher_outputs, "load_whole", lambda path, dtype: (teacher[1], teacher_tokenizer, torch.float32))
    monkeypatch.setattr(teacher_outputs, "generate_answers", answers)
    config = load_config(None, [f"model.path={student_path}", f"data.train={chat_file}", "train.objective=distill",
                                f"distill.teacher_path={teacher[0]}", "distill.mode=sequence"])
    setup = type("S", (), {"run_dir": tmp_path})()
    tokenizer = load_tokenizer(config.model)
    examples = prepare_run_data(config.data, config.train.seed, tokenizer).train_examples
    items = teacher_outputs.teacher_answers(config, setup, tokenizer, examples)
    rows = (tmp_path / teacher_outputs.ANSWERS_FILE).read_text().splitlines()
    assert len(items) == len(rows) - 1 == calls[0] - 1  # the empty answer did not pass the data doctor
    answer = [t for t, label in zip(items[0].input_ids, items[0].labels) if label != IGNORE]
    assert tokenizer.decode(answer).startswith("yes thanks")
    assert len(teacher_outputs.teacher_answers(config, setup, tokenizer, examples)) == len(items) and calls == [calls[0]]  # reused


def test_a_transfer_set_of_prompts_is_answered_by_the_teacher_and_joins_the_training_rows(
        tmp_path, tmp_path_factory, teacher, chat_file, monkeypatch):
    """`distill.transfer`: prompt-only rows (both forms) and SFT rows whose answer is replaced;
    a prompt the eval set holds is left out; the answers are cached; a bad row is named."""
    from hone.config import ModelArgs, load_config
    from hone.model.generate import Generation
    from hone.model.load import load_tokenizer

    student_path, _ = models(tmp_path_factory, vocab_size=320, seed=4)
    asked = []

    def answers(model, tokenizer, prompts, generation):
        asked.append([tokenizer.decode(p) for p in prompts])
        return [Generation(f"teacher says {i}", 3, True) for i in range(len(prompts))]

    teacher_tokenizer = load_tokenizer(ModelArgs(path=str(teacher[0])))
    monkeypatch.setattr(teacher_outputs, "load_whole", lambda path, dtype: (teacher[1], teacher_tokenizer, torch.float32))
    monkeypatch.setattr(teacher_outputs, "generate_answers", answers)
    held_out = json.loads(chat_file.read_text().splitlines()[0])
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(json.dumps(held_out) + "\n")
    system = {"role": "system", "content": "repeat the first word"}
    rows = [{"messages": [system, {"role": "user", "content": "owl hat tree"}]},  # ends in a user turn
            {"prompt": "fox box"},  # prompt only
            {"messages": [system, {"role": "user", "content": "cat sun"}, {"role": "assistant", "content": "gold"}]},
            held_out]  # the eval set's prompt: left out
    transfer = tmp_path / "transfer.jsonl"
    transfer.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(None, [f"model.path={student_path}", f"data.train={chat_file}", f"data.eval={eval_file}",
                                "train.objective=distill", f"distill.teacher_path={teacher[0]}", f"distill.transfer={transfer}"])
    setup = type("S", (), {"run_dir": tmp_path / "run"})()
    setup.run_dir.mkdir()
    tokenizer = load_tokenizer(config.model)
    held_out_examples = prepare_run_data(config.data, config.train.seed, tokenizer).eval_examples
    items = teacher_outputs.transfer_answers(config, setup, tokenizer, held_out_examples)
    assert len(items) == 3 and len(asked) == 1 and len(asked[0]) == 3
    assert "owl hat tree" in asked[0][0] and "fox box" in asked[0][1] and "cat sun" in asked[0][2]
    assert not any(held_out["messages"][1]["content"] in prompt for prompt in asked[0])
    learnt = [tokenizer.decode([t for t, label in zip(item.input_ids, item.labels) if label != IGNORE]) for item in items]
    assert all(text.startswith(f"teacher says {i}") for i, text in enumerate(learnt))  # never "gold"
    written = [json.loads(line) for line in (setup.run_dir / teacher_outputs.TRANSFER_FILE).read_text().splitlines()]
    assert written[1] == {"prompt": "fox box", "completion": "teacher says 1"}
    assert len(teacher_outputs.transfer_answers(config, setup, tokenizer, held_out_examples)) == 3 and len(asked) == 1  # reused

    transfer.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"messages": "owl"}) + "\n")
    with pytest.raises(HoneError, match=f"{transfer}:2"):
        teacher_outputs.transfer_answers(config, setup, tokenizer, held_out_examples)


def test_weight_zero_is_cross_entropy_alone_and_never_loads_the_teacher(tmp_path, tiny_llama, chat_file, monkeypatch):
    """At distill.weight=0 the divergence has no weight: the run is the causal-LM objective, and
    neither the top-k cache nor a live teacher is made (the teacher is not loaded)."""
    from hone.config import load_config
    from hone.train import objectives
    from hone.train.loop import Setup

    def no_teacher(*args):
        raise AssertionError("the teacher was loaded")

    monkeypatch.setattr(teacher_outputs, "load_whole", no_teacher)
    monkeypatch.setattr(distill_module, "load_whole", no_teacher)
    overrides = [f"model.path={tiny_llama}", f"data.train={chat_file}", "train.objective=distill",
                 f"distill.teacher_path={tiny_llama}"]
    setup = Setup(model=None, pad_id=3, device=torch.device("cpu"), compute_dtype=torch.float32, run_dir=tmp_path)
    items = batch_of(0, 3)
    started = Distill().start(setup, load_config(None, overrides + ["distill.weight=0"]), items, [], False)
    assert started.objective is objectives.CAUSAL_LM and not (tmp_path / teacher_outputs.CACHE_DIR).exists()
    with pytest.raises(AssertionError, match="the teacher was loaded"):  # any weight above 0 needs it
        Distill().start(setup, load_config(None, overrides + ["distill.weight=0.1"]), items, [], False)
