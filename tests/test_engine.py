"""Training engine invariants on a tiny model: packing is exact, checkpoints are atomic,
the guards (divergence, early stopping, overfitting, memory) do what they say, replay mixes."""

import contextlib
import json
import random

import pytest
import torch

import hone.train.loop as loop
import hone.train.objectives as objectives_module
from hone.config import AdapterArgs, ModelArgs, ReplayArgs, TrainArgs
from hone.data.collate import epoch_batches, epoch_order, pack_batch, pad_batch, row_length, split_rows
from hone.data.render import IGNORE, Tokenized
from hone.data.replay import load_replay
from hone.errors import HoneError
from hone.model.adapters import apply_method
from hone.model.load import load_model, load_tokenizer
from hone.engine import attention
from hone.engine.attention import attention_for_packing
from hone.train.checkpoint import TrainState, best_checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from hone.train.guard import watch_eval
from hone.train.loss import token_loss
from hone.train.metrics import read_metrics


def random_items(n=12, seed=0, vocab=300):
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        length = rng.randint(3, 40)
        ids = [rng.randrange(5, vocab) for _ in range(length)]
        cut = rng.randint(1, length - 1)
        items.append(Tokenized(ids, [IGNORE] * cut + ids[cut:]))
    return items


def lora_model(folder, method="lora"):
    model = load_model(ModelArgs(path=str(folder), dtype="float32"))
    torch.manual_seed(0)
    return apply_method(model, AdapterArgs(method=method, lora_rank=4))


def test_pack_batch_restarts_positions_and_never_scores_across_examples():
    items = [Tokenized([5, 6, 7], [5, 6, 7]), Tokenized([8, 9], [IGNORE, 9])]
    batch = pack_batch(items)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9]]
    assert batch["seq_lengths"].tolist() == [3, 2]


def test_packed_rows_take_few_lengths_and_little_filler():
    lengths = [row_length(n, 128) for n in range(1, 4097)]
    assert all(length >= n for n, length in zip(range(1, 4097), lengths))
    assert lengths == sorted(lengths)
    # the filler stays under the minimum, or under an eighth of the row past 8x the minimum
    assert all(length - n < max(128, length / 8) for n, length in zip(range(1, 4097), lengths))
    # 4096 token counts map onto 24 row lengths (a multiple of 128 up to 2048, then of 256)
    assert len(set(lengths)) == 24
    batch = pack_batch([Tokenized(list(range(10, 710)), list(range(10, 710)))], pad_id=0, multiple=64)
    assert batch["input_ids"].shape[1] == 704 and batch["seq_lengths"].tolist() == [700, 4]
    assert batch["labels"][0, 700:].eq(IGNORE).all()


def test_packed_loss_and_gradients_equal_the_per_example_ones(tiny_llama):
    model = lora_model(tiny_llama)
    items = random_items(6)
    total, count = torch.zeros(()), 0
    for item in items:  # one example at a time, no padding at all
        loss, n = token_loss(model, pad_batch([item], pad_id=3))
        total, count = total + loss, count + n
    total.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    with attention_for_packing(model, torch.device("cpu")):
        packed, packed_count = token_loss(model, pack_batch(items))
        assert model.config._attn_implementation == attention.NAME
    packed.backward()
    assert model.config._attn_implementation != attention.NAME  # restored after training
    assert packed_count == count
    torch.testing.assert_close(packed, total, rtol=1e-6, atol=1e-5)
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fused_layers", [False, True])
def test_last_mlp_runs_only_on_scored_positions_and_changes_nothing(tiny_llama, fused_layers, monkeypatch):
    """Long prompts, short answers: the last layer's MLP sees a packed row's length of rows,
    not every position, and the loss and gradients equal the per-example ones."""
    from hone.engine import engine
    from hone.engine import fused as fused_module

    model = lora_model(tiny_llama)
    rng = random.Random(5)
    items = []
    for _ in range(10):
        ids = [rng.randrange(5, 300) for _ in range(40)]
        items.append(Tokenized(ids, [IGNORE] * 37 + ids[37:]))
    total, count = torch.zeros(()), 0
    for item in items:
        loss, n = token_loss(model, pad_batch([item], pad_id=3))
        total, count = total + loss, count + n
    total.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    last_mlp = model.get_base_model().model.layers[-1].mlp
    seen = []  # rows each MLP runs on, in layer order
    hook = last_mlp.down_proj.base_layer.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    swiglu = fused_module.SwiGluLora.apply
    monkeypatch.setattr(fused_module.SwiGluLora, "apply", lambda x, *rest: seen.append(x.reshape(-1, x.shape[-1]).shape[0]) or swiglu(x, *rest))
    with engine(model, torch.device("cpu"), torch.float32, fused_layers=fused_layers):
        assert "forward" in last_mlp.__dict__  # the engine's pruning wraps it
        packed, packed_count = token_loss(model, pack_batch(items))
    assert "forward" not in last_mlp.__dict__  # put back as it was
    packed.backward()
    hook.remove()
    # 10 x 3 scored positions, rounded to a row length, not all 400 (the fused MLP is one
    # node for every layer; the module path hooks only the last layer's down projection)
    assert seen == ([400, 128] if fused_layers else [128])
    assert packed_count == count
    torch.testing.assert_close(packed, total, rtol=1e-6, atol=1e-5)
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)


def test_packed_attention_isolates_examples(tiny_llama):
    """Changing one example's tokens leaves the other example's loss untouched."""
    model = lora_model(tiny_llama)
    a, b = random_items(2, seed=3)
    b_changed = Tokenized([t + 1 for t in b.input_ids], b.labels)
    with attention_for_packing(model, torch.device("cpu")):
        first = token_loss(model, pack_batch([b, a]))[0] - token_loss(model, pack_batch([b]))[0]
        second = token_loss(model, pack_batch([b_changed, a]))[0] - token_loss(model, pack_batch([b_changed]))[0]
    torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-5)


def test_a_packed_step_equals_a_padded_step(tiny_llama):
    items = random_items(16)
    model_a, model_b = lora_model(tiny_llama), lora_model(tiny_llama)
    batch = [items[:4], items[4:8]]
    for model, layout in ((model_a, "pack"), (model_b, "pad")):
        setup = loop.Setup(model, 3, torch.device("cpu"), torch.float32, None)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
        context = attention_for_packing(model, torch.device("cpu")) if layout == "pack" else contextlib.nullcontext()
        with context:
            loop.train_step(setup, batch, optimizer, 0, layout=layout)
    for (name, a), (_, b) in zip(model_a.named_parameters(), model_b.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_split_rows_caps_tokens_per_row_and_keeps_order():
    items = [Tokenized([1] * n, [1] * n) for n in (30, 50, 90, 10, 10)]
    rows = split_rows(items, 80)
    assert [[len(i.input_ids) for i in row] for row in rows] == [[30, 50], [90], [10, 10]]  # the 90 is alone
    assert split_rows(items, 0) == [items]


def test_split_packed_rows_give_the_same_step(tiny_llama):
    """Capping row tokens (peak memory) does not change the update: the loss is normalised per step."""
    items = random_items(16)
    model_a, model_b = lora_model(tiny_llama), lora_model(tiny_llama)
    for model, cap in ((model_a, 0), (model_b, 50)):
        setup = loop.Setup(model, 3, torch.device("cpu"), torch.float32, None)
        with attention_for_packing(model, torch.device("cpu")):
            loss, _, _ = loop.backward_pass(setup, [items[:8], items[8:]], "pack", cap)
        model.loss = loss
    assert model_a.loss == pytest.approx(model_b.loss, rel=1e-6)
    for (name, a), (_, b) in zip(model_a.named_parameters(), model_b.named_parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_epoch_order_mixes_replay_at_the_fraction_deterministically():
    order = epoch_order(90, 7, 0.1, seed=1, epoch=0)
    replayed = [i for i in order if i >= 90]
    assert sorted(i for i in order if i < 90) == list(range(90))
    assert len(replayed) == 10 and all(90 <= i < 97 for i in replayed)
    assert order == epoch_order(90, 7, 0.1, seed=1, epoch=0)
    assert order != epoch_order(90, 7, 0.1, seed=1, epoch=1)
    items = [Tokenized([1] * (i % 9 + 2), [1] * (i % 9 + 2)) for i in range(97)]
    batches = epoch_batches(items, 8, seed=1, epoch=0, order=order, group_by_length=False)
    assert sorted(i for b in batches for i in b) == sorted(order)


def test_replay_reads_plain_text_and_trains_every_token(tiny_llama, tmp_path):
    tokenizer = load_tokenizer(ModelArgs(path=str(tiny_llama)))
    text = tmp_path / "general.txt"
    text.write_text("the cat sat on the mat\n<|endoftext|>\nhello world " * 3)
    replay = load_replay(ReplayArgs(data=str(text), fraction=0.2), tokenizer, max_length=16)
    assert replay.fraction == 0.2 and replay.items
    assert all(item.labels == item.input_ids and len(item.input_ids) <= 16 for item in replay.items)
    with pytest.raises(HoneError, match="replay.fraction"):
        load_replay(ReplayArgs(data=str(text), fraction=1.5), tokenizer, 16)


def test_fit_trains_on_replay_examples(tiny_llama, tmp_path, monkeypatch):
    seen = []
    real = loop.backward_pass
    monkeypatch.setattr(loop, "backward_pass", lambda setup, mbs, layout, *rest: seen.extend(i for b in mbs for i in b) or real(setup, mbs, layout, *rest))
    train, general = random_items(18, seed=1), random_items(5, seed=2)
    from hone.data.replay import Replay

    setup = loop.Setup(lora_model(tiny_llama), 3, torch.device("cpu"), torch.float32, tmp_path)
    loop.fit(setup, train, [], TrainArgs(epochs=1, batch_size=4, progress=False, save_every=100), replay=Replay(general, 0.1))
    replayed = [x for x in seen if any(x is g for g in general)]
    assert len(seen) == 20 and len(replayed) == 2


def checkpoint_parts(tiny_llama):
    model = lora_model(tiny_llama)
    optimizer, scheduler = loop.build_optimizer(model, TrainArgs(), 10)
    return model, optimizer, scheduler


def test_a_failed_save_leaves_the_previous_checkpoint_usable(tiny_llama, tmp_path, monkeypatch):
    model, optimizer, scheduler = checkpoint_parts(tiny_llama)
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder, model, optimizer, scheduler, TrainState(step=1), keep=2)
    import hone.train.checkpoint as checkpoint

    def dies(*args, **kwargs):  # the process "dies" between writing the weights and the optimizer
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(checkpoint.torch, "save", dies)
    with torch.no_grad():
        next(p for p in model.parameters() if p.requires_grad).add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(folder, model, optimizer, scheduler, TrainState(step=2), keep=2)
    monkeypatch.undo()
    assert latest_checkpoint(folder).name == "step-0000001"
    assert not (folder / "step-0000002").exists()
    fresh, optimizer, scheduler = checkpoint_parts(tiny_llama)
    state = load_checkpoint(latest_checkpoint(folder), fresh, optimizer, scheduler)
    assert state.step == 1
    # the next good save clears the half-written folder
    save_checkpoint(folder, fresh, optimizer, scheduler, TrainState(step=3), keep=2)
    assert not list(folder.glob(".tmp-*"))


def nan_once_at(call_number):
    calls = {"n": 0}
    real = objectives_module.token_loss

    def loss(model, batch):
        calls["n"] += 1
        total, n = real(model, batch)
        return (total * float("nan"), n) if calls["n"] == call_number else (total, n)

    return loss


def test_divergence_guard_rolls_back_and_lowers_the_learning_rate(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setattr(objectives_module, "token_loss", nan_once_at(4))
    setup = loop.Setup(lora_model(tiny_llama), 3, torch.device("cpu"), torch.float32, tmp_path)
    args = TrainArgs(max_steps=6, batch_size=4, progress=False, guard_every=2, save_every=100, warmup_ratio=0)
    state = loop.fit(setup, random_items(16), [], args)
    assert state.step == 6 and state.rollbacks == 1 and state.lr_scale == 0.5
    rows = read_metrics(tmp_path / "metrics.jsonl")
    rollback = next(r for r in rows if "rollback" in r)
    assert "non-finite loss" in rollback["rollback"] and rollback["step"] == 2  # back to the last kept state
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 3, 4, 5, 6]  # step 3 done, then redone after rollback
    assert rows[-1]["lr"] < args.learning_rate * 0.5


def test_divergence_guard_gives_up_with_advice(tiny_llama, tmp_path, monkeypatch):
    real = objectives_module.token_loss
    monkeypatch.setattr(objectives_module, "token_loss", lambda m, b: (real(m, b)[0] * float("inf"), real(m, b)[1]))
    setup = loop.Setup(lora_model(tiny_llama), 3, torch.device("cpu"), torch.float32, tmp_path)
    with pytest.raises(HoneError, match="diverged at step 1") as err:
        loop.fit(setup, random_items(8), [], TrainArgs(max_steps=3, batch_size=4, progress=False, max_retries=2))
    assert "train.learning_rate" in err.value.fix


def test_loss_spike_counts_as_divergence():
    guard = loop.DivergenceGuard(TrainArgs(spike_factor=3.0))
    state = TrainState(loss_ema=1.0, healthy_steps=10)
    assert guard.verdict(state, 2.5, 1.0) is None
    assert "spike" in guard.verdict(state, 3.5, 1.0)
    assert "gradient" in guard.verdict(state, 1.0, float("nan"))


def test_early_stopping_keeps_and_restores_the_best_checkpoint(tiny_llama, tmp_path, monkeypatch):
    scripted = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: next(scripted))
    model = lora_model(tiny_llama)
    setup = loop.Setup(model, 3, torch.device("cpu"), torch.float32, tmp_path)
    args = TrainArgs(max_steps=6, batch_size=4, eval_every=1, save_every=100, keep_checkpoints=1, progress=False,
                     early_stopping_patience=2, learning_rate=1e-2)
    state = loop.fit(setup, random_items(24), random_items(4), args)
    assert state.stopped_early and state.step == 4 and state.best_step == 2 and state.best_eval_loss == 2.0
    best = best_checkpoint(tmp_path / "checkpoints")
    assert best.name == "step-0000002" and json.loads((tmp_path / "checkpoints" / "best").read_text())["eval_loss"] == 2.0
    from safetensors.torch import load_file

    saved = load_file(best / "trainable.safetensors")
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.detach(), saved[name])


def test_overfitting_signal_when_eval_rises_while_train_falls(capsys):
    state, args = TrainState(), TrainArgs()
    for step, (train, evals) in enumerate([(2.0, 1.5), (1.5, 1.4), (1.0, 1.6)], start=1):
        state.step, state.window_loss, state.window_steps = step, train, 1
        fields = watch_eval(state, evals, args)
    assert fields.get("overfitting") and state.overfitting_step == 3
    assert "overfitting signal" in capsys.readouterr().out


def test_out_of_memory_names_the_knobs(tiny_llama, tmp_path, monkeypatch):
    def no_memory(model, batch):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: not enough memory: you tried to allocate 9 bytes.")

    monkeypatch.setattr(objectives_module, "token_loss", no_memory)
    setup = loop.Setup(lora_model(tiny_llama), 3, torch.device("cpu"), torch.float32, tmp_path)
    with pytest.raises(HoneError, match="ran out of system memory at step 1") as err:
        loop.fit(setup, random_items(8), [], TrainArgs(max_steps=2, batch_size=4, progress=False))
    for knob in ("train.batch_size", "data.max_length", "gradient_checkpointing", "qlora"):
        assert knob in err.value.fix


def test_gradient_checkpointing_gives_the_same_step(tiny_llama, tmp_path):
    weights = []
    for checkpointing in (False, True):
        model = lora_model(tiny_llama)
        setup = loop.Setup(model, 3, torch.device("cpu"), torch.float32, tmp_path / str(checkpointing))
        loop.fit(setup, random_items(8), [], TrainArgs(max_steps=2, batch_size=4, progress=False, gradient_checkpointing=checkpointing))
        weights.append([p.detach().clone() for p in model.parameters() if p.requires_grad])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_kept_heap_reuses_freed_blocks_instead_of_faulting_them_in_again():
    import resource

    from hone.engine.heap import kept_heap

    def faults_of_reallocating():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for i in range(40):  # sizes that change, as a training step's tensors do
            torch.empty(400_000 + 1000 * i).fill_(1.0)
            torch.empty(700_000 + 1000 * i).fill_(1.0)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    with kept_heap() as kept:
        faults_of_reallocating()  # the heap grows once
        inside = faults_of_reallocating()
    after = faults_of_reallocating()
    if not kept:  # only where the C library is not glibc, and then it must say so
        from hone.engine.heap import _glibc

        assert _glibc() is None
        pytest.skip("the C library is not glibc: freed memory cannot be kept in the heap here")
    assert after > 10 * max(inside, 10), (inside, after)  # ~1100 pages a round trip outside; none inside
