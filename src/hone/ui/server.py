"""`hone ui [--host] [--port] [--auth USER:PASS] [--runs DIR]`: serve the page with uvicorn.

It binds 127.0.0.1 unless told otherwise; on any other address it refuses to start without
`--auth`, since the page starts processes and reads files on this machine."""

from __future__ import annotations

import socket
from pathlib import Path

import uvicorn

from hone.errors import HoneError
from hone.serve.command import is_loopback
from hone.ui.app import create_app


def check_auth(host: str, auth: str | None) -> None:
    if auth is not None and (":" not in auth or not auth.split(":", 1)[0] or not auth.split(":", 1)[1]):
        raise HoneError(f"--auth {auth!r} is not USER:PASS", "e.g. --auth alice:a-long-passphrase")
    if auth is None and not is_loopback(host):
        raise HoneError(f"--host {host} exposes the UI beyond this machine without a password",
                        "add --auth USER:PASS, or leave --host at 127.0.0.1")


def check_port(host: str, port: int) -> None:
    """A one-line error when the address is taken (uvicorn would log a traceback-like error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise HoneError(f"cannot listen on {host}:{port}: {exc.strerror}", "pass another --port, e.g. --port 7861") from None


def ui_command(host: str, port: int, auth: str | None, runs_dir: str) -> int:
    check_auth(host, auth)
    check_port(host, port)
    app = create_app(Path(runs_dir), auth)
    shown = f"[{host}]" if ":" in host else host
    print(f"hone ui: http://{shown}:{port}/  (runs in {runs_dir}; Ctrl-C stops the UI and saves a checkpoint of any run it started)")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        app.state.ui.runs.stop_all()
    return 0
