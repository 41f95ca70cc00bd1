"""Flower's executables on this machine, the loopback they listen on, and the JSON its CLI prints."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from fedcompress.errors import RunError

__all__ = ["HOST", "cli_json", "flower_tool", "free_ports", "listening"]

HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that are free now (held together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def listening(port: int) -> bool:
    """Whether something accepts connections on the loopback ``port`` now."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def flower_tool(name: str) -> str:
    """A Flower executable: next to this interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() else shutil.which(name)
    if found is None:
        raise RunError(f"cannot find {name!r} next to {sys.executable} or on PATH; is flwr installed?")
    return found


def cli_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON object a ``flwr ... --format json`` command printed, or ``{}``."""
    text = result.stdout
    start = text.find("{")
    try:
        parsed = json.loads(text[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
