"""Training on two processes (gloo, CPU) gives one process's run: the same loss curve and the
same weights, with DDP and with FSDP2, across a SIGKILLed rank and a resume on 2 or 1 processes.

The reference is one process with the same global batch (batch_size 8 = 4 per rank x 2 ranks),
trained in this process; the two-process runs go through the real CLI: torchrun launched by hone
(`train.nproc=2`) and two torchrun "nodes" joined by a c10d rendezvous on 127.0.0.1.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hone.train.commands import resolve_config
from hone.train.sft import run_sft

SRC = str(Path(__file__).resolve().parent.parent / "src")
STEPS = 12
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


def overrides(model, data, out, *extra):
    return [f"model.path={model}", f"data.train={data}", f"train.output_dir={out}", "model.dtype=float32",
            "train.progress=false", "train.learning_rate=1e-2", "eval.compare=false", "data.check=false",
            f"train.max_steps={STEPS}", "train.eval_every=4", "train.save_every=2", "train.keep_checkpoints=20", *extra]


def curve(run: Path) -> list[tuple[float, float | None]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(row["loss"], row.get("eval_loss")) for row in rows]


def assert_same_run(run: Path, reference: Path):
    ours, theirs = curve(run), curve(reference)
    assert len(ours) == len(theirs) == STEPS
    for (loss, eval_loss), (loss_ref, eval_ref) in zip(ours, theirs):
        assert abs(loss - loss_ref) < 1e-4
        assert (eval_loss is None) == (eval_ref is None) and (eval_loss is None or abs(eval_loss - eval_ref) < 1e-4)
    weights, expected = load_file(run / "adapter_model.safetensors"), load_file(reference / "adapter_model.safetensors")
    assert weights.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=2e-5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama):
    """One process, batch 8, trained here (no subprocess): the run the others must equal."""
    from tiny import make_chat_data

    from hone.config import load_config

    folder = tmp_path_factory.mktemp("dist")
    data = make_chat_data(folder / "train.jsonl")
    run = run_sft(load_config(None, overrides(tiny_llama, data, folder / "one", "train.batch_size=8")))
    return tiny_llama, data, run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_localhost_with_ddp_equal_one_process(reference, tmp_path):
    model, data, one = reference
    run, port = tmp_path / "ddp", free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
         f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=hone-test", "-m", "hone", "train",
         *overrides(model, data, run, "train.batch_size=4", "train.distributed=ddp", "train.report_to=[mlflow]")],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert_same_run(run, one)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["distributed"] == "ddp" and len(summary["peak_rss_mb_per_process"]) == 2
    # rank 0 alone prints and tracks: one "done" line between the two nodes, one MLflow run
    assert sum("done:" in out for out, _ in outputs) == 1
    assert sum(1 for meta in (run / "mlruns").glob("*/*/meta.yaml")) == 1


def workers(launcher: int) -> dict[int, int]:
    """{rank: pid} of the training processes torchrun started under `launcher`'s tree."""
    found, todo = {}, [launcher]
    while todo:
        parent = todo.pop()
        children = Path(f"/proc/{parent}/task/{parent}/children")
        for pid in map(int, children.read_text().split() if children.exists() else []):
            todo.append(pid)
            try:
                env = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
            except OSError:
                continue
            if "RANK" in env and "TORCHELASTIC_RUN_ID" in env:
                found[int(env["RANK"])] = pid
    return found


def hone(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "hone", *args], env=ENV, capture_output=True, text=True, timeout=300)
    assert not check or result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_fsdp_killed_rank_stops_the_job_and_resume_on_two_or_one_process_is_exact(reference, tmp_path, capsys):
    model, data, one = reference
    run = tmp_path / "fsdp"
    launcher = subprocess.Popen([sys.executable, "-m", "hone", "train",
                                 *overrides(model, data, run, "train.batch_size=4", "train.nproc=2", "train.distributed=fsdp")],
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (run / "checkpoints" / "step-0000002" / "trainer_state.json").is_file():
        time.sleep(0.02)
    ranks = workers(launcher.pid)
    os.kill(ranks[1], signal.SIGKILL)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert "a training process failed" in err and "--resume" in err
    saved = json.loads((run / "checkpoints" / "latest").read_text())["checkpoint"]
    assert 2 <= int(saved.removeprefix("step-")) < STEPS, "the kill came after the run had finished"
    assert (run / "checkpoints" / saved / "dcp" / ".metadata").is_file()  # the sharded state, via torch.distributed.checkpoint
    copy = tmp_path / "fsdp-one"
    shutil.copytree(run, copy)
    (copy / "config.yaml").write_text((copy / "config.yaml").read_text().replace(str(run), str(copy)))

    resumed = hone("train", "--resume", str(run))  # the saved config: 2 processes, FSDP
    assert "resuming from" in resumed.stdout
    assert_same_run(run, one)
    # one process, here: the sharded checkpoint is read by torch.distributed.checkpoint without a process group
    run_sft(resolve_config(None, ["train.nproc=1"], str(copy)), resume=True)
    assert "per process keeps" in capsys.readouterr().out  # batch 4 x 2 ranks -> batch 8 on one process
    assert_same_run(copy, one)


def test_each_rank_gets_a_token_balanced_share_and_all_ranks_agree():
    from hone.train.distributed import World, share

    items = ["a" * n for n in (9, 1, 7, 3, 5, 4, 2)]
    shares = share(items, World(rank=0, size=2, mode="ddp"))
    assert sorted(sum(shares, [])) == sorted(items)  # every example once
    assert [sum(map(len, part)) for part in shares] == [16, 15]
    assert all(part == [i for i in items if i in part] for part in shares)  # input order kept
    assert share(items, World(rank=1, size=2, mode="ddp")) == shares  # the same on every rank
    assert share(items, World()) == [items]  # one process: the micro-batch as it was


def test_qlora_under_fsdp_is_refused_when_the_config_is_read():
    from hone.errors import HoneError

    with pytest.raises(HoneError, match="FSDP2 .* cannot shard bitsandbytes 4-bit"):
        resolve_config("adapter.method=qlora", ["train.distributed=fsdp", "train.nproc=2"], False)


def test_plan_gives_memory_per_process_and_the_global_batch(monkeypatch):
    """`hone plan` with train.nproc: the global batch, DDP's whole model plus its gradient buckets,
    FSDP's share of weights, gradients and optimizer state shrinking as processes are added."""
    from hone.config import load_config
    from hone.plan.estimate import plan_run

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    plans = {}
    for nproc in (1, 2, 4):
        config = load_config(None, ["model.path=embedded", "model.device=cpu", "model.dtype=float32", "adapter.method=full",
                                    "train.batch_size=4", "train.gradient_accumulation_steps=3", f"train.nproc={nproc}"])
        plans[nproc] = plan_run(config, calibrate=False)
    assert plans[1].parallel is None and "processes" not in plans[1].text()
    one = plans[1].memory
    for nproc in (2, 4):
        here, gpus = plans[nproc].parallel
        assert here.global_batch == 4 * nproc * 3 and here.processes == nproc
        assert here.ddp_bytes == pytest.approx(one.peak + one.gradients)
        state = one.weights + one.adapter + one.gradients + one.optimizer_state
        assert one.peak - state < here.fsdp_bytes < one.peak  # each holds its activations and a share of the state
        assert gpus.fsdp_bytes < gpus.ddp_bytes
        assert f"{nproc} processes: global batch {4 * nproc * 3} examples per step" in plans[nproc].text()
        assert "memory per process: ddp" in plans[nproc].text()
    assert plans[4].parallel[0].fsdp_bytes < plans[2].parallel[0].fsdp_bytes
