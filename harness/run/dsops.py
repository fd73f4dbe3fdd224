"""DeepSpeed's compiled ops, built once before any worker needs them.

On CPU, ``deepspeed.initialize`` compiles a shared-memory communication op with g++ the
first time (about 30 s), into ``TORCH_EXTENSIONS_DIR`` (the Makefile points it at
``.cache/torch_extensions``). Building it once in the submitting process, with a message,
beats two workers racing to build it inside a timed run. A build killed half-way leaves a
``lock`` file that makes every later build wait forever; a lock older than
``STALE_LOCK_S`` with no build running is removed first.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

STALE_LOCK_S = 600


def extensions_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root())


def clear_stale_locks(root: Path, max_age_s: float = STALE_LOCK_S) -> list[Path]:
    removed = []
    for lock in root.glob("*/lock"):
        try:
            if time.time() - lock.stat().st_mtime > max_age_s:
                lock.unlink()
                removed.append(lock)
        except FileNotFoundError:
            pass
    return removed


def prebuild_cpu_ops(stream=sys.stdout) -> None:
    """Build (or load from the cache) DeepSpeed's CPU communication op."""
    import torch

    if torch.cuda.is_available():
        return
    root = extensions_dir()
    for lock in clear_stale_locks(root):
        print(f"removed a stale build lock: {lock}", file=stream)
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    builder = ShareMemCommBuilder()
    if not builder.is_compatible():
        return
    built = (root / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").exists()
    if not built:
        print(f"building DeepSpeed's CPU communication op into {root} (first run only, about 30 s)",
              file=stream, flush=True)
    builder.load(verbose=False)


def name_cpu_accelerator() -> None:
    """On a machine without CUDA, tell DeepSpeed so (it otherwise warns on every import)."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
