"""The harness's house rules, read from its source (docs/design.md):

- only ``harness/records/`` writes a run's files: no other module calls a file-writing
  primitive, except the few listed here, each writing something that is not a run's;
- each folder imports only what its ``__init__`` says it may.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "harness"

# Calls that create, change or remove files (attribute or plain names).
WRITERS = {"write_text", "write_bytes", "mkdir", "rename", "replace", "unlink", "rmtree", "copytree",
           "copy", "copyfile", "move", "FileHandler", "dump", "atomic_write", "atomic_write_text",
           "atomic_write_json", "_atomic_write", "touch", "mkdtemp", "makedirs", "remove", "rmdir"}
# (module, enclosing function) -> what it writes, which is not a run's files
ALLOWED = {
    ("harness/report/build.py", "_atomic_write"): "reports/<sweep>/ (the comparison report)",
    ("harness/report/build.py", "write_report"): "reports/<sweep>/",
    ("harness/run/dsops.py", "clear_stale_locks"): "DeepSpeed's op build lock in TORCH_EXTENSIONS_DIR",
    ("harness/run/session.py", "scratch_dir"): "a temporary folder a checkpoint is staged in",
    ("harness/run/worker.py", "_file_rendezvous"): "the process group's rendezvous file in /tmp",
}
OWNER = "harness/records/"
DATA = "harness/data/"  # corpora and downloads: folders of data, never a run's


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _opens_for_writing(call: ast.Call) -> bool:
    if _called_name(call) not in ("open", "fdopen"):
        return False
    mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
    if mode is None:
        return False
    if not isinstance(mode, ast.Constant):
        return True  # a computed mode: assume it may write
    return any(c in str(mode.value) for c in "wax+")


def _writes(path: Path) -> list[tuple[str, int, str]]:
    """(enclosing function, line, call) of every file-writing call in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name if func == "<module>" else func)
                continue
            if isinstance(child, ast.Call):
                name = _called_name(child)
                if name in WRITERS or _opens_for_writing(child):
                    found.append((func, child.lineno, name or "?"))
            visit(child, func)

    visit(tree, "<module>")
    return found


def test_only_records_writes_a_runs_files():
    offenders = []
    for path in sorted(HARNESS.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith((OWNER, DATA)):
            continue
        for func, line, name in _writes(path):
            # str.replace, dict.copy, list.remove share names with file operations: those
            # count only as os./shutil. calls
            if name in AMBIGUOUS and not _is_file_call(path, line, name):
                continue
            if (rel, func) not in ALLOWED:
                offenders.append(f"{rel}:{line} {func}() calls {name}")
    assert not offenders, ("only harness/records/ may write a run's files; move these there "
                           "(or list what they write in ALLOWED):\n" + "\n".join(offenders))


AMBIGUOUS = ("replace", "copy", "remove", "move")


def _is_file_call(path: Path, line: int, name: str) -> bool:
    text = path.read_text(encoding="utf-8").splitlines()[line - 1]
    return any(f"{mod}.{name}(" in text for mod in ("os", "shutil"))


def test_the_scan_sees_a_write():
    """The checker itself: a module that writes a run's file is caught."""
    sample = HARNESS.parent / "tests" / "data"  # any folder; the file is not kept
    probe = sample.parent / "_layout_probe.py"
    probe.write_text("from pathlib import Path\n\ndef leak(run_dir):\n"
                     "    (Path(run_dir) / 'status.json').write_text('{}')\n"
                     "    with open(Path(run_dir) / 'metrics.jsonl', 'a') as fh:\n        fh.write('')\n")
    try:
        assert [(f, n) for f, _, n in _writes(probe)] == [("leak", "write_text"), ("leak", "open")]
    finally:
        probe.unlink()


# folder -> the harness folders it may import (besides itself); docs/design.md has the same table
MAY_IMPORT = {
    "records": set(),
    "data": set(),
    "watch": {"records"},
    "report": {"records"},
    "run": {"records", "data"},
    "sweep": {"records", "data", "run", "watch", "report"},
}


def _harness_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "harness" and len(parts) > 1 and (HARNESS / parts[1]).is_dir():
                out.add(parts[1])
    return out


def test_each_folder_imports_only_what_it_may():
    wrong = []
    for folder, allowed in MAY_IMPORT.items():
        for path in sorted((HARNESS / folder).rglob("*.py")):
            extra = _harness_imports(path) - allowed - {folder}
            if extra:
                wrong.append(f"{path.relative_to(REPO)} imports harness.{', harness.'.join(sorted(extra))}")
    assert not wrong, "\n".join(wrong)
    assert {p.name for p in HARNESS.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(MAY_IMPORT)


def test_every_folder_says_what_it_owns():
    for folder in MAY_IMPORT:
        doc = ast.get_docstring(ast.parse((HARNESS / folder / "__init__.py").read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) >= 3, f"harness/{folder}/__init__.py needs a docstring"
