"""Run specs from job files: `--set` overrides, path resolution, unique names, worker path checks (fast, no Ray)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.sweep.config import JobFileError, expand_grid, load_job_file
from harness.sweep.overrides import apply_overrides, parse_override
from sweep_helpers import REPO

QUICKSTART = REPO / "jobs" / "quickstart.yaml"


def test_values_are_yaml_and_keys_follow_the_file_as_written():
    raw = yaml.safe_load(QUICKSTART.read_text())
    apply_overrides(raw, ["train.steps=8", "model.d_model=16", "grid.seed=[0, 1]",
                          "grid.cases.0.model.depth.max_iter=4", "model.adaptive_softmax={cutoffs: [8], div_value: 2.0}",
                          "resources.node_timeout_s=30", "grid.cases.7.data.blank_len=5"], "q.yaml")
    assert raw["train"]["steps"] == 8 and raw["model"]["d_model"] == 16
    assert raw["grid"]["seed"] == [0, 1]                      # a new grid axis, its key dotted
    assert raw["grid"]["cases"][0]["model.depth"]["max_iter"] == 4  # a list index, then a dotted key
    assert raw["model"]["adaptive_softmax"] == {"cutoffs": [8], "div_value": 2.0}  # a mapping value
    assert raw["resources"]["node_timeout_s"] == 30           # a key the file left to its default
    assert raw["grid"]["cases"][7]["data.blank_len"] == 5     # a dotted key inside a case


def test_overrides_change_run_ids_and_are_validated_like_the_file():
    job, _ = load_job_file(QUICKSTART)
    base = {r.name: r.run_id for r in expand_grid(job)}
    job2, _ = load_job_file(QUICKSTART, ["train.lr=0.002"])
    changed = {r.name: r.run_id for r in expand_grid(job2)}
    assert base.keys() == changed.keys() and all(base[k] != changed[k] for k in base)
    with pytest.raises(JobFileError) as err:
        load_job_file(QUICKSTART, ["train.steps=many"])
    assert str(err.value).startswith(f"{QUICKSTART}: train.steps: ") and "\n" not in str(err.value)
    with pytest.raises(JobFileError, match="unknown key 'stepz'"):
        load_job_file(QUICKSTART, ["train.stepz=4"])


@pytest.mark.parametrize("item, problem", [
    ("train.steps", "expected KEY=VALUE"),
    ("=4", "expected KEY=VALUE"),
    ("train..steps=4", "empty part"),
    ("train.steps=[1,", "not valid YAML"),
    ("grid.cases.99.model.depth.layers=2", "not an index"),
    ("name.x=1", "not a mapping"),
])
def test_bad_overrides_are_one_line(item, problem):
    with pytest.raises(JobFileError) as err:
        load_job_file(QUICKSTART, [item])
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_parse_override_keeps_strings_and_null():
    assert parse_override("data.data_dir=/x/y", "f") == ("data.data_dir", "/x/y")
    assert parse_override("resources.max_concurrent_runs=null", "f") == ("resources.max_concurrent_runs", None)


def test_relative_data_dir_resolved_against_the_given_folder_run_id_independent(tmp_path):
    job, _ = load_job_file(QUICKSTART)
    here = expand_grid(job, base_dir=tmp_path)
    there = expand_grid(job, base_dir=tmp_path / "elsewhere")
    lm = [r for r in here if r.task == "lm"]
    assert lm and all(r.data.data_dir == str(tmp_path / "data" / "synthetic") for r in lm)
    assert [r.run_id for r in here] == [r.run_id for r in there]  # ids from the file as written
    job_abs, _ = load_job_file(QUICKSTART, [f"data.data_dir={tmp_path / 'abs'}"])
    assert {r.data.data_dir for r in expand_grid(job_abs, base_dir="/nowhere") if r.task == "lm"} \
        == {str(tmp_path / "abs")}


def test_dry_run_with_set_from_another_folder(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "harness.submit", str(QUICKSTART), "--dry-run",
                           "--set", "grid.seed=[0, 1]", "--set", "model.d_model=48"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("24 runs:") and "d_model=48" in proc.stdout  # 12 cases x 2 seeds
    bad = subprocess.run([sys.executable, "-m", "harness.submit", str(QUICKSTART), "--dry-run",
                          "--set", "train.lr=fast"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "train.lr" in bad.stderr
    assert not any(Path(tmp_path).iterdir())  # nothing written


def test_under_a_ray_job_relative_results_are_refused(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}",
           "RAY_ADDRESS": "127.0.0.1:1"}
    proc = subprocess.run([sys.executable, "-m", "harness.submit", str(QUICKSTART), "--results", "results"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--results results under `ray job submit`" in proc.stderr and proc.stderr.count("\n") == 1
    assert not any(Path(tmp_path).iterdir())


def _job_with_depths(tmp_path, depths, seeds=(0,)):
    job = {"name": "dup", "task": "copy", "data": {"dataset": "copy_memory", "blank_len": 6},
           "model": {"cell": "transformer", "d_model": 16, "n_head": 2, "d_inner": 32, "depth": depths[0]},
           "grid": {"model.depth": depths, "seed": list(seeds)}, "train": {"steps": 10, "batch_size": 2}}
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(job))
    return load_job_file(path)[0]


def test_run_names_unique_within_a_sweep_and_shipped_names_kept(tmp_path):
    depths = [{"kind": "deq", "max_iter": 12, "tol": 1e-3}, {"kind": "deq", "max_iter": 12, "tol": 1e-4},
              {"kind": "deq", "max_iter": 12, "tol": 1e-4, "solver": "anderson"},
              {"kind": "weight_tied", "layers": 4}]
    names = [r.name for r in expand_grid(_job_with_depths(tmp_path, depths, seeds=(0, 1)))]
    assert len(set(names)) == len(names) == 8
    assert "deq12_s0-tol0.001" in names and "deq12_s1-solveranderson-tol0.0001" in names
    assert "weight_tied4_s0" in names  # a name that was unique is left alone
    job, _ = load_job_file(QUICKSTART)
    assert {r.name for r in expand_grid(job)} >= {"lm_deq12", "copy_explicit4"}


def test_run_names_unique_for_any_grid(tmp_path):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    depth = st.fixed_dictionaries({"kind": st.just("deq"), "max_iter": st.sampled_from([4, 12])},
                                  optional={"tol": st.sampled_from([1e-3, 1e-4, 1e-5]),
                                            "solver": st.sampled_from(["broyden", "anderson"]),
                                            "backward_max_iter": st.sampled_from([4, 12])})

    @hypothesis.settings(max_examples=40, deadline=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(st.lists(depth, min_size=1, max_size=6, unique_by=lambda d: tuple(sorted(d.items()))))
    def check(depths):
        try:
            runs = expand_grid(_job_with_depths(tmp_path, depths))
        except JobFileError:
            return  # two points that validate to the same run are refused, as they should be
        names = [r.name for r in runs]
        assert len(set(names)) == len(names), names

    check()


def test_worker_path_check_names_the_node_and_the_path(tmp_path):
    from harness.run.worker import WorkerPathError, check_worker_paths

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    from harness.run.spec import DataSection, RunSpec

    spec = RunSpec(run_id="r", name="r", sweep="s", task="lm", model={},
                   data={"dataset": "ptb", "data_dir": str(tmp_path / "nowhere" / "ptb")},
                   train={"steps": 10, "batch_size": 2}, resources={}, deepspeed={})
    with pytest.raises(WorkerPathError) as err:  # no spec.json: the run folder is not this one
        check_worker_paths(spec, run_dir)
    assert "on node" in str(err.value) and str(run_dir) in str(err.value)
    (run_dir / "spec.json").write_text("{}")
    with pytest.raises(WorkerPathError) as err:
        check_worker_paths(spec, run_dir)
    msg = str(err.value)
    assert "on node" in msg and str(tmp_path / "nowhere" / "ptb") in msg and "\n" not in msg
    spec = spec.model_copy(update={"data": DataSection(dataset="synthetic", data_dir=str(tmp_path / "empty"))})
    with pytest.raises(WorkerPathError, match="holds no corpus"):  # never generated on a worker
        check_worker_paths(spec, run_dir)
    assert not (tmp_path / "empty").exists()
    spec = spec.model_copy(update={"data": DataSection(dataset="ptb", data_dir=str(REPO / "tests" / "data" / "ptb"))})
    check_worker_paths(spec, run_dir)  # present: no error


def test_an_override_the_grid_replaces_in_every_run_is_refused(tmp_path, capsys):
    """jobs/wt103_sweep.yaml sets model.d_model in every grid case: --set model.d_model=16 would
    change nothing, so it is refused in one line naming the grid key and the form that works."""
    wt103 = REPO / "jobs" / "wt103_sweep.yaml"
    with pytest.raises(JobFileError) as err:
        load_job_file(wt103, ["model.d_model=16"])
    message = str(err.value)
    assert "\n" not in message
    assert "--set model.d_model=16 would change nothing: every grid case sets 'model.d_model'" in message
    assert "--set grid.cases.0.model.d_model=16" in message
    # a key under a grid axis, and the seed axis for train.seed
    with pytest.raises(JobFileError, match=r"the grid axis 'model.depth' sets it in every run; change the axis "
                                           r"instead, e.g. --set grid.model.depth.0.max_iter=4"):
        load_job_file(REPO / "jobs" / "depth_scaling.yaml", ["model.depth.max_iter=4"])
    with pytest.raises(JobFileError, match=r"the grid axis 'seed' sets it in every run"):
        load_job_file(REPO / "jobs" / "copy_memory.yaml", ["train.seed=3"])
    # base values the grid does not touch, and the grid's own keys, are fine
    job, _ = load_job_file(wt103, ["train.steps=100", "grid.cases.0.model.d_model=16"])
    assert job.train.steps == 100 and job.grid["cases"][0]["model.d_model"] == 16
    assert capsys.readouterr().err == ""


def test_an_override_some_grid_cases_replace_is_applied_to_the_others_and_reported(tmp_path, capsys):
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["grid"]["cases"][0]["model.n_head"] = 4  # one case sets its own n_head
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(raw))
    job, _ = load_job_file(path, ["model.n_head=1"])
    assert job.model["n_head"] == 1 and job.grid["cases"][0]["model.n_head"] == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--set model.n_head=1 applies to the runs of 11 of 12 grid cases" in err
    assert "lm_deq12 keep their grid value of 'model.n_head'" in err


def test_a_case_with_seeds_is_one_model_with_a_run_per_seed(tmp_path):
    """``seeds`` in a grid case: one run per seed, labelled ``<label>_s<seed>``, the case's
    settings in each, the seed in train.seed; the model name (compare.pairs) is the label;
    a bad list is refused in one line; --smoke keeps the first seed."""
    from harness.records.compare import model_name
    from harness.sweep.smoke import smoke_overrides

    job = {"name": "seeds", "task": "copy", "data": {"dataset": "copy_memory", "blank_len": 6},
           "model": {"cell": "transformer", "d_model": 16, "n_head": 2, "d_inner": 32,
                     "depth": {"kind": "weight_tied", "layers": 2}},
           "grid": {"cases": [{"label": "deq4", "seeds": [3, 1, 7], "model.depth": {"kind": "deq", "max_iter": 4}},
                              {"label": "wt4", "model.depth": {"kind": "weight_tied", "layers": 4}}]},
           "compare": {"pairs": [{"model": "deq4", "baseline": "wt4"}]},
           "train": {"steps": 10, "batch_size": 2}}
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(job))
    runs = expand_grid(load_job_file(path)[0])
    assert [(r.name, r.train.seed, r.strategy) for r in runs] == [
        ("deq4_s3", 3, "deq"), ("deq4_s1", 1, "deq"), ("deq4_s7", 7, "deq"), ("wt4", 0, "weight_tied")]
    assert {model_name(r.name, r.train.seed) for r in runs} == {"deq4", "wt4"}
    # the spec's grid record keeps the case as written, the seed apart: the report's one model
    assert runs[1].grid == {"cases": {"label": "deq4", "model.depth": {"kind": "deq", "max_iter": 4}},
                            "cases.seed": 1}
    assert runs[0].grid["cases"] == runs[2].grid["cases"] and runs[3].grid == {"cases": job["grid"]["cases"][1]}
    assert len({r.run_id for r in runs}) == 4
    assert "grid.cases.0.seeds=[3]" in smoke_overrides(yaml.safe_load(path.read_text()))
    for bad in ([], [1, 1], [-1], ["a"]):
        job["grid"]["cases"][0]["seeds"] = bad
        path.write_text(yaml.safe_dump(job))
        with pytest.raises(JobFileError, match="seeds .* is not allowed; allowed: a list of distinct integers"):
            load_job_file(path)
    job["grid"]["cases"][0].update(seeds=[1], seed=2)
    path.write_text(yaml.safe_dump(job))
    with pytest.raises(JobFileError, match="'seeds' or 'seed', not both"):
        load_job_file(path)
