"""Unit tests of the job-file layer: harness.sweep.config, harness.run.dsconfig and the pre-run checks.

Every job file here is derived from ``tests/data/jobs/grid_example.yaml`` (the shape the
README's quickstart had: cases of tasks times a ``model.depth`` axis), changed
in one place and written to a temporary folder, so a test shows exactly what one key does:

- grid expansion: product size, the ``cases`` axis, the ``seed`` shorthand, run names,
  ``run_id`` (stable across loads, different when any spec value changes), duplicates;
- defaults filled in, and ``measure_warmup + measure_steps <= steps``;
- the DeepSpeed config of a run: the job's keys win over the defaults, the micro-batch
  comes from ``train.batch_size``, ``precision: auto`` is bf16 only on CUDA;
- ``check_resources`` against ``ray.nodes()``-shaped dicts (no cluster needed);
- ``check_output_dir``: unwritable locations and low free space.
"""
from __future__ import annotations

import json

import copy
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from harness.sweep import checks
from harness.run.spec import RunSpec
from harness.sweep.checks import MIN_FREE_BYTES, check_output_dir, check_resources
from harness.sweep.config import JobFile, JobFileError, expand_grid, load_job_file
from harness.run.dsconfig import deepspeed_config, validate_deepspeed

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "tests" / "data" / "jobs" / "grid_example.yaml"  # the quickstart's former shape


@pytest.fixture()
def quickstart() -> dict:
    """The quickstart job as a plain dict (a fresh copy per test)."""
    return yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))


def write_job(folder: Path, raw: dict, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def expand(folder: Path, raw: dict, name: str = "job.yaml") -> list[dict]:
    """Write ``raw``, load it back and expand its grid (what ``harness.submit`` does first)."""
    path = write_job(folder, raw, name)
    job, _ = load_job_file(path)
    return expand_grid(job, path)


def minimal_job() -> dict:
    """Only the required keys."""
    return {"name": "minimal", "task": "lm", "data": {"dataset": "synthetic"},
            "model": {"cell": "transformer", "d_model": 16, "n_head": 2, "d_inner": 32,
                      "depth": {"kind": "deq"}},
            "train": {"steps": 10, "batch_size": 4}}


# ----------------------------------------------------------------------------- grid expansion

def test_grid_is_the_product_of_its_axes(tmp_path: Path, quickstart: dict) -> None:
    n_cases, n_depths = len(quickstart["grid"]["cases"]), len(quickstart["grid"]["model.depth"])
    assert len(expand(tmp_path, quickstart)) == n_cases * n_depths
    quickstart["grid"]["seed"] = [0, 1, 2]
    quickstart["grid"]["train.lr"] = [1e-3, 3e-3]
    runs = expand(tmp_path, quickstart)
    assert len(runs) == n_cases * n_depths * 3 * 2
    # every combination appears exactly once
    combos = {(r.task, json.dumps(r.model["depth"], sort_keys=True), r.train.seed, r.train.lr) for r in runs}
    assert len(combos) == len(runs)


def test_no_grid_gives_one_run_named_after_the_sweep(tmp_path: Path) -> None:
    runs = expand(tmp_path, minimal_job())
    assert len(runs) == 1
    assert runs[0].name == "minimal" and runs[0].sweep == "minimal" and runs[0].grid == {}


def test_cases_axis_sets_several_keys_together(tmp_path: Path, quickstart: dict) -> None:
    runs = expand(tmp_path, quickstart)
    by_label: dict[str, set] = {}
    for r in runs:
        label = r.grid["cases"]["label"]
        by_label.setdefault(label, set()).add((r.task, r.data.dataset))
        assert r.name.startswith(label + "_")
    assert by_label == {"lm": {("lm", "synthetic")}, "copy": {("copy", "copy_memory")}}


def test_case_without_label_is_named_from_its_values(tmp_path: Path, quickstart: dict) -> None:
    quickstart["grid"] = {"cases": [{"train.lr": 0.01, "seed": 4}]}
    (run,) = expand(tmp_path, quickstart)
    assert run.train.lr == 0.01 and run.train.seed == 4  # "seed" is train.seed here too
    assert run.name == "lr0.01-s4"


def test_seed_is_shorthand_for_train_seed(tmp_path: Path, quickstart: dict) -> None:
    quickstart["grid"] = {"seed": [3, 7]}
    runs = expand(tmp_path, quickstart)
    assert [r.train.seed for r in runs] == [3, 7]
    assert [r.name for r in runs] == ["s3", "s7"]
    quickstart["grid"] = {"train.seed": [3, 7]}  # the long form does the same
    long_form = expand(tmp_path, quickstart, "long.yaml")
    assert [(r.train.seed, r.name) for r in long_form] == [(3, "s3"), (7, "s7")]


def test_run_names_come_from_labels_and_are_unique(tmp_path: Path, quickstart: dict) -> None:
    runs = expand(tmp_path, quickstart)
    names = [r.name for r in runs]
    assert len(set(names)) == len(names)
    assert {"lm_deq12", "lm_weight_tied4", "lm_checkpointed4", "lm_neural_ode1", "lm_explicit4",
            "copy_deq12"} <= set(names)


def test_run_ids_are_stable_across_loads_and_formatting(tmp_path: Path, quickstart: dict) -> None:
    first = [r.run_id for r in expand(tmp_path, quickstart, "a.yaml")]
    second = [r.run_id for r in expand(tmp_path, quickstart, "b.yaml")]
    assert first == second
    assert all(len(i) == 10 and int(i, 16) >= 0 for i in first)
    # the same job written with its keys in another order, and a new description: same runs
    reordered = {k: quickstart[k] for k in reversed(list(quickstart))}
    reordered["description"] = "another description"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(reordered, sort_keys=True), encoding="utf-8")
    job, _ = load_job_file(path)
    assert [r.run_id for r in expand_grid(job, path)] == first


def _set(dotted: str, value: Any) -> Callable[[dict], None]:
    def change(raw: dict) -> None:
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return change


@pytest.mark.parametrize("change", [
    _set("train.lr", 1e-2), _set("train.steps", 41), _set("train.seed", 1), _set("model.d_model", 64),
    _set("model.dropout", 0.1), _set("data.seq_len", 33), _set("data.data_dir", "elsewhere"),
    _set("resources.workers", 1), _set("deepspeed.gradient_clipping", 0.5),
    _set("deepspeed.zero_optimization", {"stage": 1}),
], ids=["lr", "steps", "seed", "d_model", "dropout", "seq_len", "data_dir", "workers", "clipping", "zero"])
def test_run_ids_change_when_any_spec_value_changes(tmp_path: Path, quickstart: dict,
                                                    change: Callable[[dict], None]) -> None:
    before = {r.name: r.run_id for r in expand(tmp_path, quickstart, "before.yaml")}
    changed = copy.deepcopy(quickstart)
    change(changed)
    after = {r.name: r.run_id for r in expand(tmp_path, changed, "after.yaml")}
    assert after.keys() == before.keys()
    assert all(after[name] != before[name] for name in before)


def test_one_grid_value_changes_one_run_id(tmp_path: Path, quickstart: dict) -> None:
    before = {r.name: r.run_id for r in expand(tmp_path, quickstart, "before.yaml")}
    quickstart["grid"]["model.depth"][1]["layers"] = 6  # weight_tied 4 -> 6
    after = {r.name: r.run_id for r in expand(tmp_path, quickstart, "after.yaml")}
    unchanged = {n for n in before if n in after and before[n] == after[n]}
    assert unchanged == set(before) - {"lm_weight_tied4", "copy_weight_tied4"}
    assert "lm_weight_tied6" in after


@pytest.mark.parametrize("grid", [
    {"seed": [0, 0]},
    {"model.depth": [{"kind": "explicit", "layers": 2}, {"kind": "explicit", "layers": 2}]},
    {"train.lr": [0.001, 1.0e-3]},
])
def test_duplicate_grid_points_are_rejected(tmp_path: Path, quickstart: dict, grid: dict) -> None:
    quickstart["grid"] = grid
    with pytest.raises(JobFileError) as info:
        expand(tmp_path, quickstart)
    assert info.value.path == "grid" and "same run" in info.value.problem


def test_grid_value_that_breaks_the_schema_names_the_run(tmp_path: Path, quickstart: dict) -> None:
    quickstart["grid"]["train.batch_size"] = [8, 0]
    with pytest.raises(JobFileError) as info:
        expand(tmp_path, quickstart)
    assert info.value.path == "train.batch_size"
    assert "train.batch_size=0" in info.value.problem


# ----------------------------------------------------------------------------- defaults and cross-field checks

def test_defaults_are_filled_in(tmp_path: Path) -> None:
    (run,) = expand(tmp_path, minimal_job())
    res = run.resources
    assert (res.workers, res.cpus_per_worker, res.gpus_per_worker, res.max_failures,
            res.max_concurrent_runs) == (1, 1, 0, 1, None)
    train = run.train
    assert (train.lr, train.lr_schedule, train.warmup_steps, train.seed, train.precision) == \
        (1e-3, "cosine", 0, 0, "auto")
    assert (train.measure_warmup, train.measure_steps, train.eval_interval) == (2, 5, 0)
    assert run.data.model_dump() == {"dataset": "synthetic", "data_dir": None, "seq_len": 32, "blank_len": 50,
                           "n_digits": 10, "synthetic": None}
    assert run.deepspeed.model_dump() == {}


def test_defaults_match_the_schema_declaration(tmp_path: Path) -> None:
    (run,) = expand(tmp_path, minimal_job())
    for section in ("train", "resources", "data"):
        model = JobFile.model_fields[section].annotation
        for field_name, field in model.model_fields.items():
            if not field.is_required():
                assert getattr(getattr(run, section), field_name) == field.default, f"{section}.{field_name}"


@pytest.mark.parametrize("warmup, measure, steps, ok", [
    (2, 5, 7, True), (2, 5, 6, False), (0, 1, 1, True), (10, 1, 10, False), (3, 5, 40, True),
])
def test_measured_steps_must_fit_in_steps(tmp_path: Path, warmup: int, measure: int, steps: int, ok: bool) -> None:
    raw = minimal_job()
    raw["train"].update(steps=steps, measure_warmup=warmup, measure_steps=measure)
    if ok:
        (run,) = expand(tmp_path, raw)
        assert run.train.steps == steps
        return
    with pytest.raises(JobFileError) as info:
        expand(tmp_path, raw)
    assert info.value.path == "train"
    assert f"({warmup} + {measure})" in info.value.problem and f"steps ({steps})" in info.value.problem


def test_measured_steps_checked_per_grid_point(tmp_path: Path, quickstart: dict) -> None:
    quickstart["grid"]["train.steps"] = [40, 6]  # measure_warmup 3 + measure_steps 5 = 8 > 6
    with pytest.raises(JobFileError) as info:
        expand(tmp_path, quickstart)
    assert info.value.path == "train" and "train.steps=6" in info.value.problem


def test_job_file_error_is_one_line_with_file_and_path() -> None:
    err = JobFileError("jobs/x.yaml", "train.steps", "0 is not allowed")
    assert str(err) == "jobs/x.yaml: train.steps: 0 is not allowed"
    assert str(JobFileError("jobs/x.yaml", "", "no such job file")) == "jobs/x.yaml: no such job file"
    assert isinstance(err, ValueError)


# ----------------------------------------------------------------------------- DeepSpeed config

def spec_with(tmp_path: Path, deepspeed: dict | None = None, **train: Any) -> dict:
    raw = minimal_job()
    raw["train"].update(train)
    if deepspeed is not None:
        raw["deepspeed"] = deepspeed
    (run,) = expand(tmp_path, raw)
    return run


def test_deepspeed_defaults(tmp_path: Path) -> None:
    cfg = deepspeed_config(spec_with(tmp_path, batch_size=6, lr=2e-3), cuda=False)
    assert cfg["train_micro_batch_size_per_gpu"] == 6
    assert cfg["zero_optimization"] == {"stage": 0}
    assert cfg["optimizer"]["type"] == "AdamW" and cfg["optimizer"]["params"]["lr"] == 2e-3
    assert cfg["optimizer"]["params"]["torch_adam"] is True
    assert cfg["scheduler"]["type"] == "WarmupCosineLR"


def test_job_deepspeed_keys_override_the_defaults(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, deepspeed={"zero_optimization": {"stage": 2}, "gradient_clipping": 0.25,
                                          "optimizer": {"params": {"lr": 0.05}}, "gradient_accumulation_steps": 3})
    cfg = deepspeed_config(spec, cuda=False)
    assert cfg["zero_optimization"] == {"stage": 2}
    assert cfg["gradient_clipping"] == 0.25 and cfg["gradient_accumulation_steps"] == 3
    # nested sections merge: the job's lr wins, the other default optimizer settings stay
    assert cfg["optimizer"]["type"] == "AdamW" and cfg["optimizer"]["params"]["lr"] == 0.05
    assert cfg["optimizer"]["params"]["betas"] == [0.9, 0.999]
    # the micro-batch still comes from train.batch_size
    assert cfg["train_micro_batch_size_per_gpu"] == spec.train.batch_size


def test_job_precision_section_wins_over_auto(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, deepspeed={"bf16": {"enabled": False}})
    assert deepspeed_config(spec, cuda=True)["bf16"]["enabled"] is False


@pytest.mark.parametrize("precision, cuda, bf16, fp16", [
    ("auto", True, True, False), ("auto", False, False, False), ("fp32", True, False, False),
    ("fp16", False, False, True), ("bf16", False, True, False),
])
def test_precision(tmp_path: Path, precision: str, cuda: bool, bf16: bool, fp16: bool) -> None:
    cfg = deepspeed_config(spec_with(tmp_path, precision=precision), cuda=cuda)
    assert (cfg["bf16"]["enabled"], cfg["fp16"]["enabled"]) == (bf16, fp16)


@pytest.mark.parametrize("schedule, kind", [("cosine", "WarmupCosineLR"), ("linear", "WarmupDecayLR"),
                                            ("constant", "WarmupLR")])
def test_lr_schedule_maps_to_deepspeed_scheduler(tmp_path: Path, schedule: str, kind: str) -> None:
    cfg = deepspeed_config(spec_with(tmp_path, lr_schedule=schedule, steps=30, warmup_steps=0), cuda=False)
    assert cfg["scheduler"]["type"] == kind
    assert cfg["scheduler"]["params"]["warmup_num_steps"] >= 1  # DeepSpeed's schedulers need >= 1
    if "total_num_steps" in cfg["scheduler"]["params"]:
        assert cfg["scheduler"]["params"]["total_num_steps"] == 30


def test_validate_deepspeed_accepts_every_quickstart_run(tmp_path: Path, quickstart: dict) -> None:
    for spec in expand(tmp_path, quickstart):
        validate_deepspeed(spec)  # raises on a config DeepSpeed would reject


@pytest.mark.parametrize("deepspeed, fragment", [
    ({"zero_optimization": {"stage": 7}}, "zero_optimization.stage: 7"),
    ({"bf16": {"enabled": "yes"}}, "bf16.enabled: 'yes'"),
    ({"gradient_clipping": "x"}, "gradient_clipping: 'x'"),
    ({"optimizer": "adam"}, "optimizer: 'adam'"),
    ({"optimizer": {"type": "Adamm"}}, "optimizer.type: 'Adamm'"),
    ({"scheduler": {"type": "Cosine"}}, "scheduler.type: 'Cosine'"),
])
def test_validate_deepspeed_names_the_bad_key(tmp_path: Path, deepspeed: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match="not allowed") as info:
        validate_deepspeed(spec_with(tmp_path, deepspeed=deepspeed))
    assert str(info.value).startswith(fragment) and "\n" not in str(info.value)


@pytest.mark.parametrize("deepspeed", [{"optimizer": {"type": "SGD", "params": {"lr": 0.1}}},
                                       {"optimizer": {"type": "adam"}}, {"scheduler": {"type": "WarmupLR"}}])
def test_validate_deepspeed_accepts_known_type_names(tmp_path: Path, deepspeed: dict) -> None:
    validate_deepspeed(spec_with(tmp_path, deepspeed=deepspeed))


# ----------------------------------------------------------------------------- resources

def node(cpu: float, gpu: float = 0, alive: bool = True) -> dict:
    """One entry of ``ray.nodes()`` (only the fields check_resources reads, plus a few real ones)."""
    resources = {"CPU": cpu, "memory": 8e9, "node:127.0.0.1": 1.0}
    if gpu:
        resources["GPU"] = gpu
    return {"NodeID": "x" * 56, "Alive": alive, "NodeManagerAddress": "127.0.0.1", "Resources": resources}


def resource_spec(workers: int, cpus: float, gpus: float = 0) -> RunSpec:
    return RunSpec(run_id="r", name="run", sweep="s", task="lm", data={"dataset": "synthetic"}, model={},
                   train={"steps": 10, "batch_size": 2}, deepspeed={},
                   resources={"workers": workers, "cpus_per_worker": cpus, "gpus_per_worker": gpus})


CLUSTER = [node(4), node(8, gpu=1), node(64, alive=False)]


@pytest.mark.parametrize("workers, cpus, gpus", [(1, 8, 1), (3, 4, 0), (1, 1, 0), (12, 1, 0), (2, 2, 0.5)])
def test_resources_that_fit_pass(workers: int, cpus: float, gpus: float) -> None:
    check_resources([resource_spec(workers, cpus, gpus)], CLUSTER, "job.yaml")


@pytest.mark.parametrize("cpus, gpus", [(16, 0), (64, 0), (4, 1.5), (8.5, 1)])
def test_a_worker_that_fits_no_node_is_rejected(cpus: float, gpus: float) -> None:
    with pytest.raises(JobFileError) as info:
        check_resources([resource_spec(1, cpus, gpus)], CLUSTER, "job.yaml")
    assert info.value.path == "resources"
    assert f"{cpus} CPU and {gpus} GPU" in info.value.problem
    assert "largest: 8 CPU, 1 GPU" in info.value.problem  # the dead 64-CPU node does not count


def test_a_gpu_worker_on_a_cpu_cluster_is_rejected() -> None:
    with pytest.raises(JobFileError, match="no node") as info:
        check_resources([resource_spec(1, 1, 1)], [node(16)], "job.yaml")
    assert info.value.path == "resources"


@pytest.mark.parametrize("workers, cpus, gpus", [(13, 1, 0), (4, 4, 0), (2, 1, 1)])
def test_too_many_workers_in_total_are_rejected(workers: int, cpus: float, gpus: float) -> None:
    with pytest.raises(JobFileError) as info:
        check_resources([resource_spec(workers, cpus, gpus)], CLUSTER, "job.yaml")
    assert info.value.path == "resources.workers"
    assert f"{workers} workers" in info.value.problem and "12 CPU, 1 GPU in all" in info.value.problem


def test_every_run_is_checked() -> None:
    runs = [resource_spec(1, 1), resource_spec(1, 2), resource_spec(1, 32)]
    with pytest.raises(JobFileError, match="32 CPU"):
        check_resources(runs, [node(4)], "job.yaml")


def test_an_empty_cluster_rejects_everything() -> None:
    with pytest.raises(JobFileError, match=r"largest: 0 CPU"):
        check_resources([resource_spec(1, 1)], [node(8, alive=False)], "job.yaml")


# ----------------------------------------------------------------------------- output folders

def test_writable_output_passes_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "results" / "deep"
    check_output_dir(target, "results", "job.yaml")
    assert not (tmp_path / "results").exists()
    assert list(tmp_path.iterdir()) == []  # the write probe is gone


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="running as root: chmod does not stop writes (see the tests below)")
def test_read_only_folder_is_rejected(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)  # 0o500
    try:
        with pytest.raises(JobFileError, match="not writable"):
            check_output_dir(locked / "results", "results", "job.yaml")
    finally:
        locked.chmod(0o700)


def test_path_under_a_regular_file_is_rejected(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(JobFileError) as info:
        check_output_dir(blocker / "results", "results", "job.yaml")
    assert info.value.file == "job.yaml" and "not a folder" in info.value.problem
    assert "results folder" in info.value.problem and str(blocker) in info.value.problem


def test_unwritable_system_folder_is_rejected() -> None:
    proc = Path("/proc")
    try:
        with tempfile.NamedTemporaryFile(dir=proc):
            pytest.skip("/proc accepts new files here")
    except OSError:
        pass
    if not proc.is_dir():
        pytest.skip("no /proc on this system")
    with pytest.raises(JobFileError) as info:
        check_output_dir(proc / "deqbench-results", "reports", "job.yaml")
    assert "reports folder /proc/deqbench-results is not writable" in info.value.problem


def test_low_free_space_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage(tmp_path)
    free = 10 * 2 ** 20
    monkeypatch.setattr(checks.shutil, "disk_usage", lambda path: real._replace(free=free))
    with pytest.raises(JobFileError) as info:
        check_output_dir(tmp_path / "results", "results", "job.yaml")
    assert "only 10 MiB free" in info.value.problem
    assert f"at least {MIN_FREE_BYTES // 2 ** 20} MiB" in info.value.problem
    monkeypatch.setattr(checks.shutil, "disk_usage", lambda path: real._replace(free=MIN_FREE_BYTES))
    check_output_dir(tmp_path / "results", "results", "job.yaml")  # exactly enough is enough
