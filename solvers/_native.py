"""The solvers' compiled host work: a small C extension, built on first use, optional.

Broyden's per-iteration small math (``_broyden_host.c``) runs as one compiled call when a
C compiler is there, and as NumPy code otherwise (the same iterates: tests/test_native.py).
On a CPU the compiled call is what brings Broyden's time to within a few percent of its
memory passes (``python -m solvers.bench``, target (2)); the NumPy code costs a few
percent more there, and nothing changes on what a solve returns.

Build: ``$CC`` (else ``cc``) with ``-O2 -shared -fPIC -ffp-contract=off`` and Python's
headers, once per source version, Python version and platform, into ``$DEQBENCH_CACHE_DIR``
(default ``$XDG_CACHE_HOME/deqbench``, else ``~/.cache/deqbench``; a folder of one's own
in the temporary folder when that cannot be written). A library is loaded only from a
folder the user owns and nobody else can write to. It is written under a temporary name
and renamed into place, so processes that build it at the same moment (the workers of one
run) all load a whole file; a damaged one is built again. The build takes about 0.2 s.

``DEQBENCH_NATIVE`` chooses: ``auto`` (the default) uses the compiled code when it builds
and falls back to NumPy with one warning when it cannot; ``0`` always uses NumPy; ``1``
requires the compiled code and raises when it cannot be built. ``backend()`` says which
is in use (the bench prints it).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SOURCE = Path(__file__).with_name("_broyden_host.c")


def _read_source() -> bytes | None:
    try:
        return SOURCE.read_bytes()
    except OSError:
        return None


# Read once, at import: under `ray job submit` the nodes of one machine unpack the working
# folder again while the driver runs (removing it first), so a file read later may be missing
# for a moment (tests/test_cluster.py saw it); the build compiles a copy of these bytes.
SOURCE_TEXT = _read_source()
CHOICES = ("auto", "0", "1")
FLAGS = ("-O2", "-shared", "-fPIC", "-ffp-contract=off")
MODULE = "solvers._broyden_host"


@dataclass(frozen=True)
class Native:
    """The loaded extension: ``small_math`` (see ``_broyden_host.c``) and where it was built."""

    path: Path
    small_math: Callable[..., tuple[list[float], list[float], bool]]


_loaded: Native | None = None
_failure: str | None = None  # why the compiled code is not in use, once that is known
_warned = False
_lock = threading.Lock()


def choice() -> str:
    """DEQBENCH_NATIVE as one of ``CHOICES``; ValueError naming the variable otherwise."""
    value = os.environ.get("DEQBENCH_NATIVE", "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"environment variable DEQBENCH_NATIVE must be one of {CHOICES}, got {value!r}")
    return value


def cache_dir() -> Path:
    """Where the built library goes (see the module docstring)."""
    explicit = os.environ.get("DEQBENCH_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "deqbench"


def _source_text() -> bytes:
    if SOURCE_TEXT is None:
        raise RuntimeError(f"the C source {SOURCE} was missing when solvers._native was imported")
    return SOURCE_TEXT


def _library_name() -> str:
    digest = hashlib.sha256(_source_text() + " ".join(FLAGS).encode()).hexdigest()[:16]
    return f"broyden_host-{digest}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"  # EXT_SUFFIX: Python, platform


def _build(target: Path) -> None:
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler.split()[0]) is None:
        raise RuntimeError(f"no C compiler: {compiler!r} is not on PATH (set CC to one)")
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        raise RuntimeError(f"Python's C headers are not installed (no {include}/Python.h)")
    extra = ["-undefined", "dynamic_lookup"] if sys.platform == "darwin" else []
    partial = source = ""
    try:
        fd, partial = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
        os.close(fd)
        fd, source = tempfile.mkstemp(prefix=target.name + ".", suffix=".c", dir=target.parent)
        with os.fdopen(fd, "wb") as out:
            out.write(_source_text())
        cmd = [*compiler.split(), *FLAGS, *extra, f"-I{include}", "-o", partial, source, "-lm"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-400:]}")
        os.replace(partial, target)  # whole file or nothing, for every process that loads it
    finally:
        for leftover in (partial, source):
            if leftover and os.path.exists(leftover):
                os.unlink(leftover)


def _load(path: Path) -> Native:
    spec = importlib.util.spec_from_file_location(MODULE, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"{path} cannot be loaded as a Python extension")
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError as exc:  # a damaged file, say
        raise RuntimeError(str(exc)) from None
    return Native(path, module.small_math)


def _own_folder(place: Path) -> None:
    """Make ``place`` (mode 0700 when new) and check that this user owns it and that nobody
    else can write to it: a library found there is loaded into the process."""
    place.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = place.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise RuntimeError(f"{place} belongs to another user; not loading code from it")
    if info.st_mode & 0o022:
        raise RuntimeError(f"{place} can be written by other users; not loading code from it")


def _build_and_load() -> Native:
    name = _library_name()
    places = [cache_dir()]
    if not os.environ.get("DEQBENCH_CACHE_DIR"):
        places.append(Path(tempfile.gettempdir()) / f"deqbench-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    errors = []
    for place in places:
        target = place / name
        try:
            _own_folder(place)
            if target.exists():
                try:
                    return _load(target)
                except RuntimeError as exc:  # a damaged file: build it again
                    errors.append(f"{target}: {exc}; built again")
            _build(target)
            return _load(target)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            errors.append(f"{target}: {exc}")
    raise RuntimeError("; ".join(errors))


def native() -> Native | None:
    """The compiled host work, built and loaded on first call; None where NumPy is used."""
    global _loaded, _failure
    wanted = choice()
    if wanted == "0":
        return None
    if _loaded is not None:
        return _loaded
    if _failure is not None and wanted == "auto":
        return None
    with _lock:  # one build per process, whichever thread asks first
        if _loaded is None:
            try:
                _loaded = _build_and_load()
                _failure = None
            except RuntimeError as exc:
                _failure = str(exc)
    if _loaded is not None:
        return _loaded
    if wanted == "1":
        raise RuntimeError(f"DEQBENCH_NATIVE=1 but the solvers' compiled host work could not be built: {_failure}")
    if not _warned:
        _warn(_failure)
    return None


def _warn(why: str | None) -> None:
    global _warned
    _warned = True
    warnings.warn(f"deqbench solvers: the compiled host work could not be built, so Broyden's small math runs "
                  f"in NumPy (the same iterates, a few percent slower on a CPU): {why}", RuntimeWarning, stacklevel=3)


def backend() -> str:
    """'compiled (<path>)' or 'numpy (<why>)': what Broyden's small math runs as."""
    try:
        lib = native()
    except RuntimeError as exc:
        return f"none: {exc}"
    if lib is not None:
        return f"compiled ({lib.path})"
    return "numpy (DEQBENCH_NATIVE=0)" if choice() == "0" else f"numpy ({_failure})"

