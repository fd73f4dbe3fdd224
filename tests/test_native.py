"""Tests of Broyden's compiled host work (solvers._native, solvers/_broyden_host.c): it
builds here, it gives the NumPy code's iterates, and without a compiler the solvers fall
back to NumPy (or, with DEQBENCH_NATIVE=1, refuse) with a clear message."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from solvers import _native, broyden
from solvers.bench import BenchConfig, TransformerCell, ill_conditioned_affine
from solver_problems import skew_and_contraction

ROOT = Path(__file__).resolve().parents[1]
CAN_BUILD = shutil.which(os.environ.get("CC", "cc").split()[0]) is not None and \
    (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file()
needs_compiler = pytest.mark.skipif(not CAN_BUILD, reason="no C compiler or no Python headers here")


def _solve(backend: str, monkeypatch, f, z0, **options):
    monkeypatch.setenv("DEQBENCH_NATIVE", backend)
    with torch.no_grad():
        return broyden(f, z0, **options)


def _cell(dtype: torch.dtype):
    cfg = BenchConfig(batch=4, seq=8, dim=32, heads=2)
    return TransformerCell(cfg, torch.device("cpu"), dtype), torch.randn(
        4, 8, 32, generator=torch.Generator().manual_seed(1), dtype=dtype)


def _skew_and_contraction():
    a, c, z0 = skew_and_contraction()
    return (lambda z: torch.einsum("bij,bj->bi", a, z) + c), z0


def _turns_nan():
    """Sample 1 turns NaN at the 5th evaluation; the others are contractions."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(3, 10, 10, generator=gen, dtype=torch.float64)
    w = 0.8 * w / torch.linalg.matrix_norm(w, 2)[:, None, None]
    x = torch.randn(3, 10, generator=gen, dtype=torch.float64)
    calls = [0]

    def f(z):
        calls[0] += 1
        out = torch.tanh(torch.einsum("bij,bj->bi", w, z) + x)
        if calls[0] >= 5:
            out = out.clone()
            out[1] = math.nan
        return out

    def fresh():
        calls[0] = 0
        return f

    return fresh, torch.zeros(3, 10, dtype=torch.float64)


@needs_compiler
def test_the_compiled_host_work_builds_here(monkeypatch):
    # CI machines have a compiler: this keeps the compiled path the one the suite exercises
    monkeypatch.setenv("DEQBENCH_NATIVE", "1")
    assert _native.native() is not None
    assert _native.backend().startswith("compiled (")


@needs_compiler
@pytest.mark.parametrize("options", [
    dict(max_iter=30, tol=1e-5),  # full memory; samples stop at different iterations
    dict(max_iter=30, tol=1e-5, memory=4),  # Kelley's restart
    dict(max_iter=30, tol=1e-5, memory=4, memory_policy="drop_oldest"),  # ring buffer
    dict(max_iter=12, tol=1e-2, stop_mode="abs"),
], ids=["full", "restart", "drop_oldest", "abs"])
def test_float32_iterates_are_bitwise_the_numpy_ones(options, monkeypatch):
    cell, z0 = _cell(torch.float32)
    ours, theirs = (_solve(backend, monkeypatch, cell, z0, **options) for backend in ("1", "0"))
    assert ours.nstep == theirs.nstep
    for field in ("z", "abs_trace", "rel_trace", "abs_residual", "rel_residual", "best_step", "converged"):
        assert torch.equal(getattr(ours, field), getattr(theirs, field)), field


@needs_compiler
@pytest.mark.parametrize("case", ["cell", "cell_restart", "affine_restart", "affine_drop_oldest", "skipped_updates",
                                  "turns_nan"])
def test_float64_iterates_match_the_numpy_ones(case, monkeypatch):
    # float64: the same operations in the same order, but NumPy's matrix products may sum in
    # another order, so within rounding (the problems here do not amplify it much)
    if case.startswith("cell"):
        f, z0 = _cell(torch.float64)
        options = dict(max_iter=30, tol=1e-9, memory=5 if case == "cell_restart" else None)
    elif case.startswith("affine"):
        f, _, _ = ill_conditioned_affine(n=60, batch=3, radius=0.6)  # mild: drop_oldest amplifies rounding
        z0 = torch.zeros(3, 60, dtype=torch.float64)
        options = dict(max_iter=60, tol=1e-10, memory=6,
                       memory_policy="restart" if case == "affine_restart" else "drop_oldest")
    elif case == "skipped_updates":
        f, z0 = _skew_and_contraction()
        options = dict(max_iter=6, tol=0.0)
    else:
        fresh, z0 = _turns_nan()
        options = dict(max_iter=40, tol=1e-10)
    runs = []
    for backend in ("1", "0"):
        runs.append(_solve(backend, monkeypatch, fresh() if case == "turns_nan" else f, z0, **options))
    ours, theirs = runs
    assert ours.nstep == theirs.nstep
    assert torch.equal(ours.converged, theirs.converged) and torch.equal(ours.nonfinite, theirs.nonfinite)
    assert torch.equal(ours.best_step, theirs.best_step)
    torch.testing.assert_close(ours.z, theirs.z, rtol=1e-9, atol=1e-12)
    scale = theirs.abs_trace[:, 0].max().item()  # rounding differences, relative to where the solve began
    torch.testing.assert_close(ours.abs_trace, theirs.abs_trace, rtol=1e-8, atol=1e-10 * scale, equal_nan=True)
    if case == "turns_nan":
        assert ours.nonfinite.tolist() == [False, True, False]


def test_a_bad_DEQBENCH_NATIVE_names_the_variable_and_its_choices(monkeypatch):
    monkeypatch.setenv("DEQBENCH_NATIVE", "yes")
    with pytest.raises(ValueError, match=r"DEQBENCH_NATIVE must be one of \('auto', '0', '1'\), got 'yes'"):
        broyden(lambda z: 0.5 * z, torch.ones(2, 3))


def test_DEQBENCH_NATIVE_0_uses_numpy(monkeypatch):
    monkeypatch.setenv("DEQBENCH_NATIVE", "0")
    assert _native.native() is None
    assert _native.backend() == "numpy (DEQBENCH_NATIVE=0)"
    res = broyden(lambda z: 0.5 * z + 1.0, torch.zeros(2, 3, dtype=torch.float64), max_iter=20, tol=1e-12)
    torch.testing.assert_close(res.z, torch.full((2, 3), 2.0, dtype=torch.float64))


SOLVE = ("import warnings, torch; warnings.simplefilter('always'); "
         "from solvers import broyden; from solvers._native import backend; "
         "r = broyden(lambda z: 0.5 * z + 1.0, torch.zeros(2, 3, dtype=torch.float64), max_iter=20, tol=1e-12); "
         "assert torch.allclose(r.z, torch.full((2, 3), 2.0, dtype=torch.float64)); print(backend())")


def _python(code: str, cache: Path, **env: str) -> subprocess.Popen:
    full = {**os.environ, "DEQBENCH_CACHE_DIR": str(cache), **env}
    if "DEQBENCH_NATIVE" not in env:  # the default, auto
        full.pop("DEQBENCH_NATIVE", None)
    return subprocess.Popen([sys.executable, "-c", code], cwd=cache.parent, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _pythonpath() -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_without_a_compiler_auto_falls_back_with_a_warning_and_1_refuses(tmp_path):
    cache = tmp_path / "cache"
    fallback = _python(SOLVE, cache, CC="/nonexistent/cc", **_pythonpath())
    out, err = fallback.communicate(timeout=120)
    assert fallback.returncode == 0, err
    assert out.startswith("numpy (") and "no C compiler" in out
    assert "RuntimeWarning" in err and "runs in NumPy" in err and "/nonexistent/cc" in err
    refused = _python(SOLVE, cache, CC="/nonexistent/cc", DEQBENCH_NATIVE="1", **_pythonpath())
    out, err = refused.communicate(timeout=120)
    assert refused.returncode != 0
    assert "RuntimeError: DEQBENCH_NATIVE=1 but the solvers' compiled host work could not be built" in err


@needs_compiler
def test_processes_that_build_at_once_all_load_a_whole_library(tmp_path):
    cache = tmp_path / "cache"  # empty: every process finds no library and builds one
    procs = [_python(SOLVE, cache, DEQBENCH_NATIVE="1", **_pythonpath()) for _ in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert out.startswith(f"compiled ({cache}")
    assert [p.suffix for p in cache.iterdir()] == [".so"]  # one library, no partial files left


@needs_compiler
def test_the_build_needs_the_source_only_at_import(tmp_path):
    # under `ray job submit` the working folder is unpacked again while the driver runs, so the
    # C file may be missing for a moment when the first solve builds the library
    code = ("from pathlib import Path; import solvers._native as n; n.SOURCE = Path('/nonexistent/x.c'); "
            + SOLVE)
    proc = _python(code, tmp_path / "cache", DEQBENCH_NATIVE="1", **_pythonpath())
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith("compiled (")
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".so"]  # the copy of the source removed


@needs_compiler
def test_a_damaged_library_in_the_cache_is_built_again(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / _native._library_name()).write_bytes(b"not a shared library")
    proc = _python(SOLVE, cache, DEQBENCH_NATIVE="1", **_pythonpath())
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith("compiled (")


def test_a_cache_folder_others_can_write_to_is_not_loaded_from(tmp_path):
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(0o777)  # anyone could have put a library there
    proc = _python(SOLVE, cache, DEQBENCH_NATIVE="1", **_pythonpath())
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "can be written by other users; not loading code from it" in err
    assert not list(cache.iterdir())  # nothing built there either


@needs_compiler
def test_the_kernel_refuses_sizes_out_of_range(monkeypatch):
    monkeypatch.setenv("DEQBENCH_NATIVE", "1")
    kernel = _native.native().small_math
    with pytest.raises(ValueError, match="sizes out of range"):  # cols > capacity + 1, before any memory is read
        kernel(False, 2, 3, 9, 1, 1, False, 0, 0, 0, False, 0, 0, 0, 0, 0, 1e-9, 1e-38, 1e-4, True, 0,
               [1.0, 1.0], 0.0, False)
    with pytest.raises(TypeError, match="takes 24 arguments"):
        kernel(False, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@needs_compiler
def test_on_cuda_the_compiled_host_work_matches_the_numpy_code(monkeypatch):
    # on CUDA the reduction comes to the host in one copy and the weights go back in one
    cfg = BenchConfig(batch=4, seq=8, dim=32, heads=2)
    cell = TransformerCell(cfg, torch.device("cuda"), torch.float32)
    z0 = torch.randn(4, 8, 32, generator=torch.Generator().manual_seed(1)).cuda()
    for options in (dict(), dict(memory=4), dict(memory=4, memory_policy="drop_oldest")):
        ours, theirs = (_solve(backend, monkeypatch, cell, z0, max_iter=30, tol=1e-5, **options)
                        for backend in ("1", "0"))
        assert ours.nstep == theirs.nstep and torch.equal(ours.best_step, theirs.best_step)
        torch.testing.assert_close(ours.z, theirs.z, rtol=1e-5, atol=1e-6)
