"""Per-step metrics as JSONL in the run folder, and the terminal progress bar."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """Appends one JSON object per optimizer step. On resume, lines after the checkpoint's
    step are dropped so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, keep_through_step: int = 0, enabled: bool = True, tracker=None):
        """`enabled`: False on every rank but 0 (nothing written); `tracker` gets each record too
        (`hone.train.tracking.Trackers`)."""
        self.path, self.enabled, self.tracker = path, enabled, tracker
        if not enabled:
            return
        kept = []
        if keep_through_step and path.is_file():
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= keep_through_step:
                        kept.append(line)
                except ValueError:
                    continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tracker is not None:
            self.tracker.log(record)


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class ProgressBar:
    """tqdm bar with loss, tokens/s and ETA; silent when disabled."""

    def __init__(self, total: int, initial: int, enabled: bool = True):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            # disable=None: a bar on a terminal, none in logs and pipes.
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=None)

    def update(self, record: dict) -> None:
        if self.bar is None:
            return
        postfix = {"loss": f"{record['loss']:.4f}", "tok/s": f"{record['tokens_per_s']:.0f}"}
        if "eval_loss" in record:
            postfix["eval"] = f"{record['eval_loss']:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
