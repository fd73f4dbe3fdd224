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
"""
from __future__ import annotations

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
    """Apply ``--set`` items, in order, to the parsed job file ``raw`` (changed in place)."""
    for item in items:
        key, value = parse_override(item, file)
        if not isinstance(raw, dict):
            raise JobFileError(file, "", f"--set {key}: the job file's top level is not a mapping")
        _set(raw, key.split("."), value, file, key)
    return raw


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
