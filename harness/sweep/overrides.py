"""Command-line overrides of a job file: ``--set KEY=VALUE`` (repeatable).

``KEY`` is a dotted path into the job file *as written*: ``train.steps``, ``model.d_model``,
``resources.workers``, ``model.depth.max_iter``. Grid keys are themselves dotted paths, so
``grid.model.depth`` names the grid axis ``model.depth`` and ``grid.seed`` the axis
``seed``; a number indexes a list (``grid.cases.1.model.d_inner`` is the key
``model.d_inner`` of the second case). At every mapping the longest run of path parts that
is already a key wins; a key that is not there yet is created (nested mappings as needed),
so an override can add a key the file leaves to its default.

``VALUE`` is parsed as YAML with the same safe loader as the file (``4``, ``1.0e-3``,
``[0, 1]``, ``{kind: deq, max_iter: 8}``, ``null``). The overridden job is then validated
exactly like a file: a bad value is the same one-line :class:`JobFileError` (exit code 2).
Overrides change run ids as any change to the file does, and ``sweep.json`` records them.
An override the grid replaces in every run is refused (it would silently do nothing); one
the grid's cases replace in some runs is applied to the others and reported in a line.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

from harness.sweep.config import JobFileError


def parse_override(item: str, file: str | Path) -> tuple[str, Any]:
    """``"train.steps=4"`` -> ``("train.steps", 4)``; a one-line JobFileError otherwise."""
    from harness.sweep.config import _UniqueKeyLoader

    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise JobFileError(file, "", f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=100")
    if any(not part for part in key.split(".")):
        raise JobFileError(file, "", f"--set {item!r}: KEY {key!r} has an empty part; "
                                     "use a dotted path such as train.steps")
    try:
        value = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        problem = (getattr(exc, "problem", None) or str(exc).splitlines()[0]).strip()
        raise JobFileError(file, key, f"--set {item!r}: VALUE is not valid YAML ({problem})") from None
    except RecursionError:
        raise JobFileError(file, key, f"--set {key}=...: VALUE is nested too deeply") from None
    return key, value


def apply_overrides(raw: Any, items: Iterable[str], file: str | Path) -> Any:
    """Apply ``--set`` items, in order, to the parsed job file ``raw`` (changed in place).

    An override the grid replaces in every run would do nothing: it is refused in one line
    naming the grid key that shadows it and the form that works. One the grid's cases replace
    in some runs only is applied to the others, and a line on stderr names the runs that keep
    their grid value."""
    keys = []
    for item in items:
        key, value = parse_override(item, file)
        if not isinstance(raw, dict):
            raise JobFileError(file, "", f"--set {key}: the job file's top level is not a mapping")
        _set(raw, key.split("."), value, file, key)
        keys.append((key, value, item))
    for key, value, item in keys:
        _check_shadow(raw, key, value, item, file)
    return raw


def _under(key: str, grid_key: str) -> bool:
    """Whether a grid key sets ``key`` (the key itself or a mapping above it); ``seed`` is ``train.seed``."""
    key, grid_key = ("train.seed" if k == "seed" else k for k in (key, grid_key))
    return key == grid_key or key.startswith(grid_key + ".")


def _check_shadow(raw: dict, key: str, new_value: Any, item: str, file: str | Path) -> None:
    """Refuse ``--set key=...`` when the grid sets ``key`` in every run; note it when in some."""
    grid = raw.get("grid")
    if key.split(".")[0] in ("grid", "name", "description", "compare") or not isinstance(grid, dict):
        return
    value = item.partition("=")[2]
    for axis in grid:
        if axis != "cases" and _under(key, axis):
            rest = key[len(axis) + 1:] if key != axis else ""
            example = f"grid.{axis}.0.{rest}={value}" if rest else f"grid.{axis}=[{value}]"
            raise JobFileError(file, key, f"--set {item} would change nothing: the grid axis {axis!r} sets it in "
                                          f"every run; change the axis instead, e.g. --set {example}")
    cases = grid.get("cases")
    if not isinstance(cases, list):
        return
    setting = [i for i, case in enumerate(cases) if isinstance(case, dict)
               and any(_under(key, sub) and not (sub == key and case[sub] == new_value)  # same value: no shadow
                       for sub in case if sub != "label")]
    if not setting:
        return
    def label(i: int) -> str:
        return str(cases[i].get("label") or f"case {i}")
    shadow = next(sub for sub in cases[setting[0]] if sub != "label" and _under(key, sub))
    rest = key[len(shadow) + 1:] if key != shadow else ""
    example = f"grid.cases.{setting[0]}.{shadow}" + (f".{rest}" if rest else "") + f"={value}"
    if len(setting) == len(cases):
        raise JobFileError(file, key, f"--set {item} would change nothing: every grid case sets {shadow!r}; set "
                                      f"it per case instead, e.g. --set {example}")
    kept = ", ".join(label(i) for i in setting)
    print(f"note: --set {item} applies to the runs of {len(cases) - len(setting)} of {len(cases)} grid cases; "
          f"{kept} keep their grid value of {shadow!r} (e.g. --set {example})", file=sys.stderr)


def _set(node: Any, parts: list[str], value: Any, file: str | Path, key: str) -> None:
    walked: list[str] = []
    while True:
        if isinstance(node, list):
            part = parts[0]
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                where = ".".join(walked) or "top level"
                raise JobFileError(file, key, f"--set: {where} is a list of {len(node)} items; "
                                              f"{part!r} is not an index into it (0-{len(node) - 1})")
            index = int(part)
            if len(parts) == 1:
                node[index] = value
                return
            walked.append(part)
            node, parts = node[index], parts[1:]
            continue
        if not isinstance(node, dict):
            where = ".".join(walked)
            raise JobFileError(file, key, f"--set: {where} is a {type(node).__name__}, not a mapping, "
                                          f"so it has no key {parts[0]!r}")
        # the longest run of parts that is already a key (grid keys contain dots)
        for n in range(len(parts), 0, -1):
            name = ".".join(parts[:n])
            if name in node:
                break
        else:
            # a new key: inside grid (or a grid case) the rest is one dotted key
            n = len(parts) if walked[:1] == ["grid"] else 1
            name = ".".join(parts[:n])
        if n == len(parts):
            node[name] = value
            return
        if name not in node or node[name] is None:
            node[name] = {}
        walked.append(name)
        node, parts = node[name], parts[n:]
