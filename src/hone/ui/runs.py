"""The Train tab's processes: each run is `hone train` in a process of its own (the UI never
trains in its own process), its output in the run folder's `ui.log`. Stop sends SIGINT, what
Ctrl-C sends, so the loop saves a checkpoint at the next step boundary; resume is
`hone train --resume RUN`. Runs are read back from their folders, so runs started from a
terminal, or before the UI restarted, are listed too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hone.errors import HoneError

LOG = "ui.log"
CONFIG = "ui.yaml"  # the YAML the page produced; `hone train` saves its resolved config.yaml beside it
ERROR_PREFIX = "hone: error: "


@dataclass
class Job:
    run_dir: Path
    process: subprocess.Popen
    command: list[str]
    started: float = field(default_factory=time.time)
    stop_requested: bool = False


def hone_command(*args: str) -> list[str]:
    """`hone ARGS` run by this Python (the same install the UI runs from)."""
    return [sys.executable, "-m", "hone", *args]


def last_error(log: Path) -> str | None:
    """The CLI's one-line error (`hone: error: ...`) in a run's log, if it printed one."""
    if not log.is_file():
        return None
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(ERROR_PREFIX)]
    return lines[-1].removeprefix(ERROR_PREFIX) if lines else None


def read_metrics(run_dir: Path, since: int = 0) -> list[dict[str, Any]]:
    """metrics.jsonl's rows from line `since` on (a half-written last line is left for next time)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines()[since:]:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def report_dir(run_dir: Path) -> Path | None:
    """Where the run's comparison report is: the run folder (`hone train`) or its `eval/` (`hone compare`)."""
    for folder in (run_dir, run_dir / "eval"):
        if (folder / "report.json").is_file():
            return folder
    return None


class Runs:
    """The runs under `root` and the `hone train` processes this UI started."""

    def __init__(self, root: Path):
        self.root = root
        self.jobs: dict[Path, Job] = {}
        self.lock = threading.Lock()

    def start(self, yaml_text: str, output_dir: str) -> Path:
        """Write the config into the run folder and start `hone train` on it."""
        run_dir = Path(output_dir)
        if (run_dir / "checkpoints").exists():
            raise HoneError(f"{run_dir} already holds a run", "resume it, or set train.output_dir to a new folder")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG).write_text(yaml_text)
        return self._launch(run_dir, hone_command("train", str(run_dir / CONFIG)), fresh_log=True)

    def resume(self, run_dir: Path) -> Path:
        if not (run_dir / "config.yaml").is_file():
            raise HoneError(f"{run_dir} has no saved config.yaml to resume from", "start the run first; resume continues a started run")
        return self._launch(run_dir, hone_command("train", "--resume", str(run_dir)), fresh_log=False)

    def compare(self, run_dir: Path, limit: int | None) -> Path:
        """`hone compare --tuned RUN` in its own process, for a run trained with eval.compare=false."""
        extra = ["--limit", str(limit)] if limit else []
        return self._launch(run_dir, hone_command("compare", "--tuned", str(run_dir), "--out", str(run_dir), *extra), fresh_log=False)

    def _launch(self, run_dir: Path, command: list[str], fresh_log: bool) -> Path:
        run_dir = run_dir.resolve()
        with self.lock:
            job = self.jobs.get(run_dir)
            if job is not None and job.process.poll() is None:
                raise HoneError(f"{run_dir} is already running (pid {job.process.pid})", "stop it first, or wait for it to finish")
            log = (run_dir / LOG).open("w" if fresh_log else "a")
            log.write(f"$ {' '.join(command[1:])}\n")
            log.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "HONE_UI_CHILD": "1"}
            # A session of its own: the terminal's Ctrl-C reaches the UI, which stops its runs itself.
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, start_new_session=True)
            log.close()
            self.jobs[run_dir] = Job(run_dir, process, command)
        return run_dir

    def stop(self, run_dir: Path) -> None:
        """SIGINT, as Ctrl-C: the loop finishes its step, saves a checkpoint and exits."""
        job = self.jobs.get(run_dir.resolve())
        if job is None or job.process.poll() is not None:
            raise HoneError(f"{run_dir} is not running", "start or resume it first")
        job.stop_requested = True
        job.process.send_signal(signal.SIGINT)

    def stop_all(self, wait_s: float = 30.0) -> None:
        """At UI shutdown: every running job is stopped as Ctrl-C stops it (a checkpoint is saved)."""
        running = [job for job in self.jobs.values() if job.process.poll() is None]
        for job in running:
            job.process.send_signal(signal.SIGINT)
        deadline = time.time() + wait_s
        for job in running:
            try:
                job.process.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                job.process.kill()

    def status(self, run_dir: Path) -> dict[str, Any]:
        """What the page shows for one run: state, exit code, error line, summary, progress."""
        run_dir = run_dir.resolve()
        job = self.jobs.get(run_dir)
        code = job.process.poll() if job else None
        config = _read_yaml(run_dir / "config.yaml") or _read_yaml(run_dir / CONFIG) or {}
        if job is not None and code is None:
            state = "stopping" if job.stop_requested else "running"
        elif job is not None and code == 130:
            state = "stopped"
        elif job is not None and code != 0:
            state = "failed"
        elif (run_dir / "summary.json").is_file():
            state = "finished"
        else:
            state = "stopped" if (run_dir / "checkpoints").is_dir() else "not started"
        metrics = read_metrics(run_dir)
        return {"run": str(run_dir), "name": run_dir.name, "state": state, "exit_code": code,
                "error": last_error(run_dir / LOG) if state == "failed" else None,
                "summary": read_json(run_dir / "summary.json"), "steps": metrics[-1]["step"] if metrics else 0,
                "max_steps": (config.get("train") or {}).get("max_steps"), "method": (config.get("adapter") or {}).get("method"),
                "has_report": report_dir(run_dir) is not None, "resumable": (run_dir / "checkpoints").is_dir() and state != "running",
                "pid": job.process.pid if job and code is None else None}

    def listing(self) -> list[dict[str, Any]]:
        """Every run folder under `root` (one with a config) and every job started here, newest first."""
        folders = {job.run_dir for job in self.jobs.values()}
        if self.root.is_dir():
            folders |= {p.resolve() for p in self.root.iterdir()
                        if p.is_dir() and ((p / "config.yaml").is_file() or (p / CONFIG).is_file())}
        return [self.status(p) for p in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)]

    def log_tail(self, run_dir: Path, lines: int = 40) -> str:
        log = run_dir / LOG
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.is_file() else ""


def _read_yaml(path: Path) -> dict | None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None
