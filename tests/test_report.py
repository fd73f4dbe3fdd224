"""harness.report: tables checked against the fixture numbers, files, escaping, rendering.

The fixture sweep (tests/fixtures_records.py) has five strategies x depths 4/8/16 x two
seeds, per-step train/eval records, one failed run (deq, depth 16, seed 1), one running
and one pending run. Expected values are computed here from the summaries the fixture
wrote, independently of harness.report.
"""
from __future__ import annotations

import base64
import csv
import math
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from fixtures_records import FAILED_REASON, OPTIMAL_PPL, write_fixture_sweep
from harness.report import model_frame, load_report_data, write_report
from harness.report.__main__ import main
from harness.report.units import EM_DASH, format_stat, format_value

RUNNING = ("explicit", 16, 1)
PENDING = ("neural_ode", 4, 1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The full fixture sweep and its report (built once for the module)."""
    root = tmp_path_factory.mktemp("sweeps")
    fx = write_fixture_sweep(root, running=[RUNNING], pending=[PENDING])
    out = write_report(fx.dir, root / "report")
    return fx, out


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _md_tables(readme: str) -> dict[str, list[dict]]:
    """Every README table as {title: [row dicts keyed by header]} (cells unescaped)."""
    tables, title, header = {}, None, None
    for line in readme.splitlines():
        if line.startswith("#"):
            title, header = line.lstrip("#").strip().replace("\\", ""), None
        elif line.startswith("| "):
            cells = [c.strip().replace("\\", "") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if header is None:
                header = cells
                tables[title] = []
            elif not set(line) <= set("|:- "):
                tables[title].append(dict(zip(header, cells)))
    return tables


def _md_row(readme: str, title: str, model: str) -> dict:
    """The row of ``model`` in the README table whose title starts with ``title``."""
    for name, rows in _md_tables(readme).items():
        if name.startswith(title):
            for row in rows:
                if row.get("model") == model:
                    return row
    raise AssertionError(f"no row {model!r} in a README table {title!r}")


COST, QUALITY = "Cost", "Quality"


def test_report_files_written(built):
    fx, out = built
    for name in ("index.html", "README.md", "summary.csv", "models.csv", "memory_vs_depth.png",
                 "quality_curves.png", "solver_stats.png", "time_split.png", "tradeoff.png", "equilibrium.png"):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name
    readme = (out / "README.md").read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert not link.startswith(("/", "http")), link
        assert (out / link).read_bytes().startswith(PNG_MAGIC), link


def test_summary_csv_one_row_per_run_with_every_field(built):
    fx, out = built
    rows = _csv_rows(out / "summary.csv")
    assert len(rows) == len(fx.specs) == 30
    assert {r["run_id"] for r in rows} == set(fx.specs)
    columns = set(rows[0])
    documented = ("run_id sweep name task dataset cell strategy depth seed world_size device params_total "
                  "params_embedding params_non_embedding activation_bytes peak_mem_bytes static_mem_bytes "
                  "step_time_s fwd_time_s bwd_time_s solver_time_s tokens_per_s wall_time_s steps nfe "
                  "fwd_nstep_mean fwd_nstep_max fwd_abs_res_mean fwd_abs_res_max fwd_rel_res_mean "
                  "fwd_rel_res_max bwd_nstep_mean bwd_nstep_max bwd_res_mean bwd_res_max train_loss val_loss "
                  "val_ppl test_loss test_ppl val_acc test_acc optimal_ppl").split()
    assert not set(documented) - columns
    assert {"grid.model.depth", "grid.seed", "spec.train.lr", "spec.model.d_model",
            "state", "reason", "failed_rank"} <= columns
    by_id = {r["run_id"]: r for r in rows}
    for run_id, summary in fx.summaries.items():
        row = by_id[run_id]
        assert row["state"] == "finished"
        for key in ("val_ppl", "activation_bytes", "step_time_s", "params_non_embedding"):
            assert math.isclose(float(row[key]), float(summary[key]), rel_tol=1e-12), (run_id, key)
    failed = by_id[fx.run_id_of("deq", 16, 1)]
    assert (failed["state"], failed["reason"], failed["failed_rank"]) == ("failed", FAILED_REASON, "1")
    assert failed["val_ppl"] == ""  # missing stays empty, never "nan"


def test_mean_val_ppl_and_memory_saved_match_fixture(built):
    fx, out = built
    models = {r["model"]: r for r in _csv_rows(out / "models.csv")}
    readme = (out / "README.md").read_text()
    for depth in (4, 8):
        deq = fx.finished("deq", depth)
        base = fx.finished("explicit", depth)
        assert len(deq) == len(base) == 2
        mean_ppl = statistics.mean(s["val_ppl"] for s in deq)
        std_ppl = statistics.stdev(s["val_ppl"] for s in deq)
        saved = 100.0 * (1.0 - statistics.mean(s["activation_bytes"] for s in deq)
                         / statistics.mean(s["activation_bytes"] for s in base))
        slowdown = statistics.mean(s["step_time_s"] for s in deq) / statistics.mean(s["step_time_s"] for s in base)
        row = models[f"deq, depth {depth}"]
        assert math.isclose(float(row["val_ppl_mean"]), mean_ppl, rel_tol=1e-12)
        assert math.isclose(float(row["val_ppl_std"]), std_ppl, rel_tol=1e-9)
        assert math.isclose(float(row["activation_saved_pct"]), saved, rel_tol=1e-9)
        assert math.isclose(float(row["slowdown_x"]), slowdown, rel_tol=1e-9)
        assert row["baseline_model"] == f"explicit, depth {depth}"
        cost = _md_row(readme, COST, f"deq, depth {depth}")
        assert cost["act. saved"] == f"{saved:+.1f}%"
        lo, hi = float(row["slowdown_lo"]), float(row["slowdown_hi"])  # over the two seeds, on logs
        assert lo < slowdown < hi and cost["slowdown"] == f"{slowdown:.2f}\u00d7 [{lo:.2f}, {hi:.2f}]"
        assert cost["depth"] == str(depth)
        half = 12.7062047 * std_ppl / math.sqrt(2)  # t_{0.975, 1}: two seeds
        assert math.isclose(float(row["val_ppl_ci95"]), half, rel_tol=1e-7)
        quality = _md_row(readme, QUALITY, f"deq, depth {depth}")
        assert quality["val ppl"] == f"{mean_ppl:.1f} \u00b1 {half:.2g}"
        # the explicit stack holds depth x the DEQ's parameters: shown, marked, never judged
        params = base[0]["params_non_embedding"] / deq[0]["params_non_embedding"]
        assert row["matched"] == f"unmatched (params {params:.2f}\u00d7)"
        assert row["quality_diff"] == "" and row["quality_verdict"] == ""
        assert quality["vs baseline"] == row["matched"] and cost["matched"] == row["matched"]
    # per-run relative column in summary.csv: against the baseline model's mean
    base_act = statistics.mean(s["activation_bytes"] for s in fx.finished("explicit", 8))
    run_id = fx.run_id_of("deq", 8, 0)
    row = next(r for r in _csv_rows(out / "summary.csv") if r["run_id"] == run_id)
    expected = 100.0 * (1.0 - fx.summaries[run_id]["activation_bytes"] / base_act)
    assert math.isclose(float(row["activation_saved_pct"]), expected, rel_tol=1e-9)


def test_seed_counts_and_missing_metrics(built):
    fx, out = built
    readme = (out / "README.md").read_text()
    assert _md_row(readme, COST, "deq, depth 16")["n"] == "1/2"  # one seed failed
    only = fx.finished("deq", 16)[0]
    assert _md_row(readme, QUALITY, "deq, depth 16")["val ppl"] == f"{only['val_ppl']:.1f}"  # one run: no std
    explicit = _md_row(readme, QUALITY, "explicit, depth 8")
    assert explicit["fwd nstep"] == explicit["bwd res."] == EM_DASH  # no solver stats for explicit depth
    deq = _md_row(readme, QUALITY, "deq, depth 8")
    assert deq["fwd nstep"].startswith(f"{statistics.mean(s['fwd_nstep_mean'] for s in fx.finished('deq', 8)):.2f}")
    html = (out / "index.html").read_text()
    for text in (readme, html, (out / "models.csv").read_text()):
        assert not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_failed_pending_running_and_environment_listed(built):
    fx, out = built
    readme = (out / "README.md").read_text()
    html = (out / "index.html").read_text()
    failed_id = fx.run_id_of("deq", 16, 1)
    for page in (readme, html):
        assert failed_id in page
        assert fx.run_id_of(*RUNNING) in page and fx.run_id_of(*PENDING) in page
        assert "3f9c2d1e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e" in page  # git commit
        assert "2.13.0" in page and "0.19.8" in page  # torch, deepspeed versions
        assert "2025-01-15T09:59:00+00:00" in page  # sweep date
        assert f"{OPTIMAL_PPL:g}" in page
    assert "FloatingPointError: non-finite loss at step 12 (rank 1)" in html
    row = next(line for line in readme.splitlines() if failed_id in line)
    assert "| 1 |" in row  # the failed rank
    assert "<pre>" in html and "model.depth:" in html and "max_iter" in html  # the job file


def test_html_is_self_contained(built):
    fx, out = built
    html = (out / "index.html").read_text()
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "@import" not in html and "url(" not in html
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == len(list(out.glob("*.png"))) == 6
    for data in images:
        assert base64.b64decode(data).startswith(PNG_MAGIC)
    assert "@media print" in html


def test_records_are_escaped(tmp_path):
    nasty = "<script>alert('x')</script> & <b>bold</b> | pipe"
    fx = write_fixture_sweep(tmp_path, name="esc", strategies=("deq",), depths=(8,), seeds=(0, 1),
                             failed=[("deq", 8, 1)], failed_reason=nasty)
    out = write_report(fx.dir, tmp_path / "report")
    html = (out / "index.html").read_text()
    assert "<script>" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "&lt;esc&gt; &amp; co" in html  # the job file's comment, escaped inside <pre>
    readme = (out / "README.md").read_text()
    row = next(line for line in readme.splitlines() if "alert" in line)
    assert "\\<script\\>" in row and "\\| pipe" in row
    assert row.count(" | ") == 7  # the reason's pipe did not add a column (8 columns)


def test_regenerating_gives_the_same_files(built, tmp_path):
    fx, first = built
    second = write_report(fx.dir, tmp_path / "again")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        a, b = (first / name).read_bytes(), (second / name).read_bytes()
        if name in ("index.html", "README.md"):
            strip = lambda raw: [ln for ln in raw.decode().splitlines() if "Generated " not in ln]  # noqa: E731
            assert strip(a) == strip(b), name
        else:
            assert a == b, name


def test_partial_sweep_still_renders(tmp_path):
    """Copy task, one depth, no DEQ, no peak memory or timing split: fewer figures, no errors."""
    fx = write_fixture_sweep(tmp_path, name="copy", task="copy", strategies=("weight_tied", "explicit"),
                             depths=(8,), seeds=(0,), failed=(),
                             drop=("peak_mem_bytes", "fwd_time_s", "bwd_time_s", "solver_time_s"))
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "solver_stats.png").write_bytes(b"stale")  # from an earlier report
    out = write_report(fx.dir, tmp_path / "report")
    assert not (out / "memory_vs_depth.png").exists()  # depth does not vary
    assert not (out / "solver_stats.png").exists()  # no DEQ; the stale figure is gone
    assert not (out / "time_split.png").exists()
    assert (out / "quality_curves.png").exists()
    readme = (out / "README.md").read_text()
    assert "val acc" in readme and "val ppl" not in readme and "peak mem" not in readme
    acc = fx.finished("weight_tied", 8)[0]["val_acc"]
    assert _md_row(readme, QUALITY, "weight_tied")["val acc"] == f"{100 * acc:.1f}%"
    assert _md_row(readme, COST, "explicit")["slowdown"] == "1.00\u00d7"  # the default baseline is explicit
    html = (out / "index.html").read_text()
    assert not re.search(r"\bnan\b", html + readme, re.IGNORECASE)


def test_mixed_task_sweep_like_quickstart(tmp_path):
    """lm and copy in one sweep (a ``cases`` grid axis): tables per task, baselines within a task."""
    fx = write_fixture_sweep(tmp_path, name="mixed", tasks=("lm", "copy"), depths=(4,), seeds=(0,), failed=())
    out = write_report(fx.dir, tmp_path / "report")
    readme = (out / "README.md").read_text()
    assert "### Cost: size, memory and speed \u2014 task lm" in readme
    assert "### Quality and solver behaviour \u2014 task copy" in readme
    models = {r["model"]: r for r in _csv_rows(out / "models.csv")}
    assert set(models) == {f"{s}, task={t}" for s in ("explicit", "weight_tied", "checkpointed", "neural_ode", "deq")
                           for t in ("lm", "copy")}
    for task in ("lm", "copy"):
        row = models[f"deq, task={task}"]
        assert row["baseline_model"] == f"explicit, task={task}"
        expected = fx.finished("deq", task=task)[0]["step_time_s"] / fx.finished("explicit", task=task)[0]["step_time_s"]
        assert math.isclose(float(row["slowdown_x"]), expected, rel_tol=1e-9)
    acc = fx.finished("deq", task="copy")[0]["val_acc"]
    assert _md_row(readme, "Quality and solver behaviour \u2014 task copy", "deq, task=copy")["val acc"] == \
        f"{100 * acc:.1f}%"
    assert not (out / "memory_vs_depth.png").exists()  # every strategy ran at one depth only
    assert (out / "quality_curves.png").exists() and (out / "tradeoff.png").exists()


def test_sweep_without_finished_runs(tmp_path):
    fx = write_fixture_sweep(tmp_path, name="early", strategies=("deq",), depths=(4,), seeds=(0, 1), failed=(),
                             pending=[("deq", 4, 0)], running=[("deq", 4, 1)])
    out = write_report(fx.dir, tmp_path / "report")
    html = (out / "index.html").read_text()
    assert "No finished runs yet" in html
    assert len(_csv_rows(out / "summary.csv")) == 2


def test_baseline_choice_and_bad_input(built, tmp_path):
    fx, _ = built
    data = load_report_data(fx.dir)
    models = model_frame(data, "weight_tied").set_index("model")
    tied = statistics.mean(s["step_time_s"] for s in fx.finished("weight_tied", 4))
    deq = statistics.mean(s["step_time_s"] for s in fx.finished("deq", 4))
    assert models.loc["weight_tied, depth 4", "slowdown_x"] == pytest.approx(1.0)
    assert models.loc["deq, depth 4", "slowdown_x"] == pytest.approx(deq / tied, rel=1e-9)
    with pytest.raises(ValueError, match="baseline: 'transformer_xl' is not a strategy.*deq"):
        write_report(fx.dir, tmp_path / "x", baseline="transformer_xl")
    assert main([str(fx.dir), "--out", str(tmp_path / "cli"), "--baseline", "nope"]) == 2
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "cli")]) == 2
    small = write_fixture_sweep(tmp_path, name="small", strategies=("explicit", "deq"), depths=(4,), seeds=(0,),
                                failed=())
    assert main([str(small.dir), "--out", str(tmp_path / "cli"), "--baseline", "deq"]) == 0
    assert "- **baseline strategy**: deq" in (tmp_path / "cli" / "README.md").read_text()


def test_human_units():
    assert format_value(None, "bytes") == EM_DASH and format_value(float("nan"), "plain") == EM_DASH
    assert format_value(3 * 2**20, "bytes") == "3 MiB"
    assert format_value(1536, "bytes") == "1.50 KiB"
    assert format_value(0.0123, "seconds") == "12.3 ms"
    assert format_value(12345.0, "rate") == "12.3k tok/s"
    assert format_value(2.1e-3, "sci") == "2.1e-3"
    assert format_value(-12.04, "pct") == "-12.0%"
    assert format_stat(10.5 * 2**20, 0.06 * 2**20, "bytes", 2) == "10.5 \u00b1 0.06 MiB"
    assert format_stat(33.5, 0.9, "plain", 1) == "33.5"  # one run: no std
    with pytest.raises(ValueError, match="unit kind 'furlongs'"):
        format_value(1.0, "furlongs")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if path:
            return path
    pytest.skip("no Chromium found (install Debian's `chromium` package to run the rendering test)")


def test_html_renders_in_headless_chromium(built, tmp_path):
    fx, out = built
    browser = _chromium()
    page = (out / "index.html").resolve().as_uri()
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile1'}", "--dump-dom", page],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', dom.stdout)) == 6  # with the equilibrium figure
    assert len(re.findall(r"<tr", dom.stdout)) >= 2 * 15 + 2  # two model tables with 15 models each
    assert "deq, depth 16" in dom.stdout and FAILED_REASON in dom.stdout
    shot = tmp_path / "page.png"
    run = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}",
                          f"--screenshot={shot}", "--window-size=1280,2600", page],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-2000:]
    for log in (dom.stderr, run.stderr):
        bad = [ln for ln in log.splitlines() if "CONSOLE" in ln or "Uncaught" in ln or "net::ERR" in ln]
        assert not bad, bad
    from matplotlib.image import imread
    pixels = imread(shot)[..., :3]  # (H, W, 3) floats in [0, 1]
    assert pixels.shape[:2] == (2600, 1280)  # tall enough to hold the first figure
    deq_red = ((abs(pixels[..., 0] - 0xD6 / 255) < 0.03) & (abs(pixels[..., 1] - 0x27 / 255) < 0.03)
               & (abs(pixels[..., 2] - 0x28 / 255) < 0.03))
    assert deq_red.sum() > 100  # the memory figure is drawn (DEQ's line), not a broken image


def test_labels_name_the_one_depth_option_that_tells_models_apart():
    """Two DEQ entries that differ in grad are 'deq, grad=ift' and 'deq, grad=phantom' (the
    option a block leaves out reads as its default), not the whole block; a strategy with one
    entry keeps its plain name."""
    import json as _json

    import pandas as pd

    from harness.report.data import _expand_block_axes, _model_labels

    blocks = [{"kind": "deq", "max_iter": 12}, {"kind": "deq", "max_iter": 12, "grad": "phantom", "grad_steps": 5},
              {"kind": "explicit", "layers": 4}]
    runs = pd.DataFrame({"strategy": ["deq", "deq", "explicit"], "depth": [12, 12, 4], "task": ["lm"] * 3,
                         "dataset": ["synthetic"] * 3, "cell": ["transformer"] * 3,
                         "grid.model.depth": [_json.dumps(b) for b in blocks]})
    whole, opened = _expand_block_axes(runs, ["grid.model.depth"])
    assert whole == [] and "grid.model.depth.grad" in opened and list(runs["grid.model.depth.grad"]) == \
        ["ift", "phantom", None]
    fields = ("strategy", "depth", "task", "dataset", "cell", *opened)
    labels, extra = _model_labels(runs, fields, frozenset(opened))
    assert labels == ["deq, grad=ift", "deq, grad=phantom", "explicit"]
    assert extra == ("grid.model.depth.grad",)


def test_the_committed_quickstart_report_renders_without_console_errors(tmp_path):
    """reports/quickstart/ as committed (make run's output): Chromium loads it with no console
    error, and it shows the verdict columns and the claims check."""
    browser = _chromium()
    page = (Path(__file__).resolve().parents[1] / "reports" / "quickstart" / "index.html")
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert dom.returncode == 0, dom.stderr[-2000:]
    bad = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln or "net::ERR" in ln]
    assert not bad, bad
    for text in ("Claims check", "solver health", "matched", "vs baseline"):
        assert text in dom.stdout, text
