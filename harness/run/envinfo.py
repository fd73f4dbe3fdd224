"""The environment record of a run or sweep (what ran, where, with what; docs/records.md)."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.records import utc_now

_REPO = Path(__file__).resolve().parent.parent
# Set by harness.submit where the user submits, and passed to every worker: a worker's copy
# of the code (e.g. Ray's job upload) may have no .git, and must record the same commit.
GIT_COMMIT_ENV = "DEQBENCH_GIT_COMMIT"
GIT_DIRTY_ENV = "DEQBENCH_GIT_DIRTY"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty): from $DEQBENCH_GIT_COMMIT / $DEQBENCH_GIT_DIRTY when set, else from git."""
    commit = os.environ.get(GIT_COMMIT_ENV)
    dirty_text = os.environ.get(GIT_DIRTY_ENV)
    if commit is None:
        commit = _git("rev-parse", "HEAD")
        if dirty_text is None:
            status = _git("status", "--porcelain", "--untracked-files=no")
            return commit, (bool(status) if status is not None else None)
    dirty = {"yes": True, "1": True, "true": True, "no": False, "0": False, "false": False}.get(
        (dirty_text or "").strip().lower())
    return commit or None, dirty


def solver_host_math() -> str:
    """What Broyden's per-iteration small math runs as here: 'compiled (<library>)' or
    'numpy (<why>)' (solvers._native; it moves the solver's time on a CPU by a few percent)."""
    from solvers._native import backend

    return backend()


def environment(**extra: Any) -> dict[str, Any]:
    """Git commit and dirtiness, versions, devices, host, time; ``extra`` is merged in."""
    import torch

    cuda = torch.cuda.is_available()
    commit, dirty = git_state()
    env = {
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": _version("ray"),
        "deepspeed": _version("deepspeed"),
        "torchdiffeq": _version("torchdiffeq"),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device_count": torch.cuda.device_count() if cuda else 0,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda
        else [f"cpu ({platform.processor() or platform.machine()})"],
        "cpu_count": os.cpu_count(),
        "solver_host_math": solver_host_math(),
        "started": utc_now(),
    }
    env.update(extra)
    return env
