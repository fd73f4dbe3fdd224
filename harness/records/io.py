"""Reading and writing one record file: atomic JSON writes, whole-line appends, and the
tolerant readers every record goes through.

Writers: :func:`atomic_write_text`, :func:`atomic_write_json` (a temporary file in the same
folder, fsync, ``os.replace``: readers see the old file or the new one) and
:func:`append_whole` (an append the disk refuses is cut back to the old end).

Readers: :func:`read_json` returns a record, or ``default`` when the file does not exist;
a file that exists but cannot be used (unreadable, empty, not UTF-8, not JSON, or JSON of
the wrong shape for its name: :func:`shape_problem`) raises :class:`RecordError`, a
ValueError whose message is one line, ``<path>: <what is wrong>``. :func:`scan_jsonl`
reads a JSON-lines file and returns its good records and a line per skipped bad line (a
torn last line, a writer mid-append, is ignored silently). :class:`RecordProblem` is one
damaged record met by a reader that went on without it; ``str()`` gives its one line,
naming the file, the run and what the reader did instead.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from harness.records import schema

STATES = ("pending", "running", "finished", "failed")


class RecordError(ValueError):
    """A record file that exists but cannot be used; the message is ``<path>: <problem>``."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = Path(path), one_line(problem)
        super().__init__(f"{self.path}: {self.problem}")


@dataclasses.dataclass(frozen=True)
class RecordProblem:
    """A damaged record that a reader went on without (``str()``: one line for the user)."""

    path: Path
    problem: str
    run_id: str | None = None
    name: str | None = None   # the run's name, where its spec could be read
    action: str = "read as missing"

    def __str__(self) -> str:
        who = ""
        if self.run_id:
            who = f" (run {self.name}, {self.run_id})" if self.name and self.name != self.run_id else \
                f" (run {self.run_id})"
        return one_line(f"{self.path}: {self.problem}{who}; {self.action}", limit=600)

    def named(self, name: str | None) -> "RecordProblem":
        return dataclasses.replace(self, name=name) if name and not self.name else self


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with its line breaks folded and cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ----------------------------------------------------------------------------- writing

def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(obj: Any) -> Any:
    """Replace non-finite floats with None so every file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def json_line(record: dict) -> str:
    """One metrics line (strict JSON, newline included)."""
    return json.dumps(_clean(record), default=_json_default) + "\n"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), indent=2, sort_keys=True, default=_json_default) + "\n")


def append_whole(path: str | Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (made if missing) and fsync; if the write fails (a full
    disk), the file is cut back to its old end, so no half line or record stays behind to
    corrupt the next append."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        size = fh.tell()
        try:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        except OSError:
            fh.truncate(size)
            raise


# ----------------------------------------------------------------------------- shapes

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(value), "a number")


def _fields(record: dict, types: dict[str, Callable[[Any], bool]], what: dict[str, str]) -> str | None:
    for key, ok in types.items():
        if record.get(key) is not None and not ok(record[key]):
            return f"{key!r} is {_kind(record[key])}, expected {what[key]}"
    return None


_NUM, _STR, _OBJ = (lambda v: _is_number(v)), (lambda v: isinstance(v, str)), (lambda v: isinstance(v, dict))
_INT = lambda v: _is_number(v) and float(v).is_integer()  # noqa: E731
_NUMS = lambda v: isinstance(v, list) and all(x is None or _is_number(x) for x in v)  # noqa: E731
_WHAT = {_NUM: "a number", _STR: "a string", _OBJ: "an object", _INT: "a whole number", _NUMS: "a list of numbers"}


def _typed(**types: Callable[[Any], bool]) -> Callable[[dict], str | None]:
    return lambda record: _fields(record, types, {k: _WHAT[v] for k, v in types.items()})


def _status_shape(status: dict) -> str | None:
    if status.get("state") is not None and status.get("state") not in STATES:
        return f"'state' is {json.dumps(status['state'])[:40]}, expected one of {', '.join(STATES)}"
    return _typed(run_id=_STR, reason=_STR, rank=_INT, attempt=_INT, step=_INT, started=_STR, ended=_STR,
                  updated=_STR, attempt_started=_NUM, attempt_last_report=_NUM, attempt_times_s=_NUMS,
                  task_started=_NUM, task_ended=_NUM)(status)


_TEXT_SUMMARY = {f.key for f in schema.FIGURES if "summary" in f.records and f.group in ("identity", "replicas")
                 and not f.unit}


_LIST_SUMMARY = ("step_times_s", "infer_times_s", "attempt_wall_s")  # lists of numbers; the rest single values


def _summary_shape(summary: dict) -> str | None:
    for key in schema.keys("summary"):
        value = summary.get(key)
        if value is None or key in ("rank_param_sha", "rank_nodes"):
            continue
        ok = isinstance(value, str) if key in _TEXT_SUMMARY else (_NUMS(value) if key in _LIST_SUMMARY
                                                                  else _is_number(value))
        if not ok:
            return f"{key!r} is {_kind(value)}, expected {'a string' if key in _TEXT_SUMMARY else 'a number'}"
    return None


def _spec_shape(spec: dict) -> str | None:
    problem = _typed(run_id=_STR, name=_STR, sweep=_STR, task=_STR, grid=_OBJ, data=_OBJ, model=_OBJ,
                     train=_OBJ, resources=_OBJ, deepspeed=_OBJ)(spec)
    if problem is None and isinstance((spec.get("model") or {}).get("depth"), (list, str, int, float, bool)):
        problem = "'model.depth' is not an object"
    return problem or _typed(steps=_INT, seed=_INT)(spec.get("train") or {})


def _meta_shape(meta: dict) -> str | None:
    problem = _typed(name=_STR, created=_STR, env=_OBJ, compare=_OBJ, submitted_at=_NUM)(meta)
    ids = meta.get("run_ids")
    if problem is None and ids is not None and not (
            isinstance(ids, list) and all(isinstance(r, str) and r not in (".", "..") and r
                                          and "/" not in r and "\\" not in r and "\0" not in r for r in ids)):
        problem = "'run_ids' is not a list of run folder names"
    return problem


def _analysis_shape(analysis: dict) -> str | None:
    problem = _typed(kind=_STR, rel_residual=_OBJ, layer_diff=_NUMS, trained_layers=_NUM, step=_NUM)(analysis)
    traces = analysis.get("rel_residual") or {}
    if problem is None and not all(_NUMS(v) for v in traces.values()):
        problem = "'rel_residual' holds something other than lists of numbers"
    return problem


SHAPES: dict[str, Callable[[dict], str | None]] = {
    "status.json": _status_shape, "summary.json": _summary_shape, "spec.json": _spec_shape,
    "sweep.json": _meta_shape, "analysis.json": _analysis_shape, "env.json": lambda _: None}


def shape_problem(name: str, value: Any) -> str | None:
    """What is wrong with the parsed record ``value`` of a file called ``name`` (None: nothing;
    a file not in :data:`SHAPES` may hold any JSON)."""
    if name not in SHAPES:
        return None
    if not isinstance(value, dict):
        return f"holds {_kind(value)}, expected a JSON object"
    return SHAPES[name](value)


_METRIC_KEYS = frozenset(schema.keys("train")) | frozenset(schema.keys("eval"))


def metrics_line_problem(record: Any) -> str | None:
    """What is wrong with one parsed metrics line (None: nothing)."""
    if not isinstance(record, dict):
        return f"holds {_kind(record)}, expected a JSON object"
    if not isinstance(record.get("kind"), str):
        return "no 'kind' string"
    for key in _METRIC_KEYS - {"kind"}:
        value = record.get(key)
        if value is not None and not _is_number(value):
            return f"{key!r} is {_kind(value)}, expected a number"
    return None


# ----------------------------------------------------------------------------- reading

def parse_json(raw: bytes) -> Any:
    """Bytes of one JSON document -> its value; ValueError with a short, one-line problem."""
    if not raw.strip():
        raise ValueError("empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON, torn or overwritten? ({exc.msg}: line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # huge integers, deep nesting
        raise ValueError(f"not JSON this reader takes ({one_line(str(exc), 120) or type(exc).__name__})") from None


def read_json(path: str | Path, default: Any = None) -> Any:
    """The record at ``path``; ``default`` when the file does not exist; :class:`RecordError`
    when it exists but cannot be used (see the module docstring)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return default
    except OSError as exc:
        raise RecordError(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        value = parse_json(raw)
    except ValueError as exc:
        raise RecordError(path, str(exc)) from None
    problem = shape_problem(path.name, value)
    if problem is not None:
        raise RecordError(path, problem)
    return value


def scan_jsonl(path: str | Path, check: Callable[[Any], str | None] = metrics_line_problem
               ) -> tuple[list[dict], list[str]]:
    """(the good records of a JSON-lines file, one ``line N: problem`` per bad line skipped).
    A missing file has no records; an incomplete last line (a writer mid-append) is ignored."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"cannot be read ({exc.strerror or type(exc).__name__})"]
    records, bad = [], []
    lines = raw.split(b"\n")[:-1]  # what follows the last newline is torn
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = parse_json(line)
        except ValueError as exc:
            bad.append(f"line {number}: {exc}")
            continue
        problem = check(value)
        if problem is None:
            records.append(value)
        else:
            bad.append(f"line {number}: {problem}")
    return records, bad


def read_jsonl(path: str | Path) -> list[dict]:
    """The good records of a JSON-lines file (:func:`scan_jsonl`; bad lines skipped)."""
    return scan_jsonl(path, lambda v: None if isinstance(v, dict) else "not an object")[0]


def skipped_lines(bad: list[str]) -> str:
    """One line for the bad lines :func:`scan_jsonl` skipped."""
    shown = "; ".join(bad[:2]) + ("; ..." if len(bad) > 2 else "")
    return f"{len(bad)} damaged line{'s' if len(bad) != 1 else ''} ({shown})"
