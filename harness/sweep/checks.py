"""Checks that need more than the job file's structure, all done before anything runs.

- the model block of every run: its configuration is validated by building the model on
  PyTorch's ``meta`` device (no memory is allocated, so a paper-scale model checks in
  milliseconds);
- the DeepSpeed block of every run, by DeepSpeed's own config classes;
- the data directory of every corpus the sweep reads;
- the output folders: writable, with free space;
- the resources of a run against the nodes of the Ray cluster.

Each failure is a :class:`harness.sweep.config.JobFileError`: one line naming the file, the key
path, the bad value and what is allowed.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from harness.sweep.config import JobFileError, _short
from harness.run.spec import RunSpec

MIN_FREE_BYTES = 200 * 2 ** 20
# Parameters of one run's model: 10^10 fp32 weights are 40 GB before gradients and optimizer
# state, more than one accelerator holds (ZeRO 1-2 shard only the optimizer state and grads).
MAX_PARAMS = 10 ** 10


def _placeholder_vocab(spec: RunSpec) -> int:
    if spec.task == "copy":
        return 10
    from models.config import MAX_VOCAB

    adaptive = spec.model.get("adaptive_softmax")
    cutoffs = adaptive.get("cutoffs") if isinstance(adaptive, dict) else None
    if not isinstance(cutoffs, list):
        cutoffs = []  # the model check says what is wrong with it
    ints = [c for c in cutoffs if isinstance(c, int) and not isinstance(c, bool)]
    return min(max([1000] + [c * 2 for c in ints]), MAX_VOCAB)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def check_models(runs: list[RunSpec], file: str | Path) -> dict[str, dict]:
    """Build every distinct model config on the meta device; ValueError -> JobFileError.

    Returns each run's parameter counts (``{run_id: {"total", "embedding", "non_embedding"}}``;
    LM embedding counts use the corpus's vocabulary when it is known, else a placeholder).
    """
    import torch

    from models import build_model

    seen: dict[Any, dict] = {}
    counts: dict[str, dict] = {}
    for spec in runs:
        try:
            settings = spec.model_settings(_placeholder_vocab(spec))  # models' own parse and checks
            cfg = settings if _hashable(settings) else repr(settings)
            if cfg in seen:
                counts[spec.run_id] = seen[cfg]
                continue
            seen[cfg] = {}
            with torch.device("meta"):
                seen[cfg] = counts[spec.run_id] = build_model(settings).param_counts()
        except (ValueError, TypeError, KeyError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            path, sep, problem = msg.partition(": ")
            if not (sep and path.startswith("model")):  # models names the key path itself
                path, problem = "model", msg
            raise JobFileError(file, path, f"{problem} (run {spec.name})") from None
        except NotImplementedError:
            pass  # an op without a meta kernel: the config itself was accepted
        except Exception as exc:  # models code failing on a value its checks let through
            msg = (str(exc).strip().splitlines() or [""])[0]
            raise JobFileError(file, "model", f"the model cannot be built: {type(exc).__name__}"
                                              f"{': ' + msg if msg else ''} (run {spec.name})") from None
        if seen[cfg] and seen[cfg]["total"] > MAX_PARAMS:
            raise JobFileError(file, "model", f"{seen[cfg]['total']:.3g} parameters is too many: at most "
                                              f"{MAX_PARAMS:.0e} (run {spec.name})")
    return counts


def check_deepspeed(runs: list[RunSpec], file: str | Path) -> None:
    from harness.run.dsconfig import validate_deepspeed

    for spec in runs:
        try:
            validate_deepspeed(spec)
        except ValueError as exc:
            sub, sep, problem = str(exc).partition(": ")
            if sep and re.fullmatch(r"[A-Za-z_][\w.]*", sub):  # "zero_optimization.stage: ..."
                raise JobFileError(file, f"deepspeed.{sub}", f"{problem} (run {spec.name})") from None
            raise JobFileError(file, "deepspeed", f"{exc} (run {spec.name})") from None


def check_data(runs: list[RunSpec], file: str | Path) -> None:
    from harness.data import DataError, check_data_dir
    from harness.data.datasets import probe_splits

    for dataset, data_dir in sorted({(r.data.dataset, r.data.data_dir or "")
                                     for r in runs if r.task == "lm"}):
        if not data_dir:
            raise JobFileError(file, "data.data_dir", f"dataset {dataset!r} needs a data_dir "
                                                      "(the folder holding the corpus files)")
        try:
            check_data_dir(dataset, data_dir)
            probe_splits(dataset, data_dir)  # empty or binary splits, before Ray starts
        except DataError as exc:
            raise JobFileError(file, "data.data_dir", str(exc).splitlines()[0]) from None
        except (OSError, ValueError) as exc:  # e.g. a name too long for the file system
            raise JobFileError(file, "data.data_dir", f"{dataset}: data dir {_short(data_dir)} cannot be "
                                                      f"used: {getattr(exc, 'strerror', None) or exc}") from None
    from harness.data.datasets import synthetic_state
    from harness.data.synthetic_corpus import check_synthetic_spec

    for data_dir, spec in synthetic_specs(runs, file).items():  # a corpus there must be the one asked for
        if spec is not None and synthetic_state(Path(data_dir)) == "complete":
            try:
                check_synthetic_spec(data_dir, spec)
            except DataError as exc:
                raise JobFileError(file, "data.data_dir", str(exc).splitlines()[0]) from None


def synthetic_specs(runs: list[RunSpec], file: str | Path) -> dict[str, object]:
    """data_dir -> the synthetic corpus spec its runs ask for (``data.synthetic``; None: any),
    per folder of the LM runs on the synthetic corpus; two different specs for one folder are
    refused in one line."""
    wanted: dict[str, object] = {}
    for r in runs:
        if r.task != "lm" or r.data.dataset != "synthetic":
            continue
        spec, seen = r.data.synthetic_spec(), wanted.get(r.data.data_dir)
        if spec is not None and seen is not None and seen != spec:
            raise JobFileError(file, "data.synthetic", f"{r.data.data_dir}: two runs ask for different "
                               f"synthetic corpora in one folder; give each its own data_dir")
        wanted[r.data.data_dir] = seen if seen is not None else spec
    return wanted


def check_output_dir(path: Path, what: str, file: str | Path) -> None:
    """The folder (or the nearest existing folder above it) is writable and has at least
    MIN_FREE_BYTES free. Nothing is left behind: the probe file is removed at once."""
    probe_root = path.absolute()
    while not probe_root.exists() and probe_root != probe_root.parent:
        probe_root = probe_root.parent
    if not probe_root.is_dir():
        raise JobFileError(file, "", f"{what} folder {path}: {probe_root} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=probe_root, prefix=".deqbench-write-probe-"):
            pass
    except OSError as exc:
        raise JobFileError(file, "", f"{what} folder {path} is not writable: "
                                     f"{exc.strerror or exc}") from None
    free = shutil.disk_usage(probe_root).free
    if free < MIN_FREE_BYTES:
        raise JobFileError(file, "", f"{what} folder {path} has only {free // 2 ** 20} MiB free; "
                                     f"at least {MIN_FREE_BYTES // 2 ** 20} MiB are needed")


def check_resources(runs: Iterable[dict], nodes: list[dict], file: str | Path) -> None:
    """Every run's workers fit the cluster: each worker on some node, all of them together.

    ``nodes`` is ``ray.nodes()``-shaped: dicts with ``Alive`` and ``Resources``.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    total_cpu = sum(r.get("CPU", 0) for r in alive)
    total_gpu = sum(r.get("GPU", 0) for r in alive)
    for spec in runs:
        res = spec.resources
        cpu, gpu, n = res.cpus_per_worker, res.gpus_per_worker, res.workers
        if not any(r.get("CPU", 0) >= cpu and r.get("GPU", 0) >= gpu for r in alive):
            raise JobFileError(file, "resources", f"a worker needs {cpu:g} CPU and {gpu:g} GPU, but no node "
                               f"of the cluster has that much (largest: "
                               f"{max((r.get('CPU', 0) for r in alive), default=0)} CPU, "
                               f"{max((r.get('GPU', 0) for r in alive), default=0)} GPU)")
        if n * cpu > total_cpu or n * gpu > total_gpu:
            raise JobFileError(file, "resources.workers", f"{n} workers x ({cpu:g} CPU, {gpu:g} GPU) exceed "
                               f"the cluster ({total_cpu} CPU, {total_gpu} GPU in all)")
