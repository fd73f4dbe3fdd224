"""``write_report``: a sweep's records -> ``reports/<sweep>/`` (HTML, README, CSVs, PNGs).

Files written into the output folder:

- ``index.html``  self-contained page (figures embedded as base64 PNG)
- ``README.md``   the same tables in Markdown, figures linked as the PNGs below
- ``<figure>.png`` one file per figure the sweep has data for
- ``summary.csv`` one row per run: every summary metric, relative columns, grid and spec
- ``models.csv``  one row per model: mean / std / n of every metric, relative columns

Everything is computed from the records alone. Files are replaced atomically, and PNGs
of figures a previous report had but this one lacks are removed, so regenerating gives
the same files apart from the "Generated" timestamp.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from harness.report.claims import claims_table
from harness.report.time_to_quality import time_to_quality_table
from harness.report.content import build_content
from harness.report.data import SweepData, load_report_data
from harness.report.figures import FIGURE_BUILDERS, build_figures
from harness.report.html import render_html
from harness.report.markdown import render_markdown
from harness.report.display import display_tables
from harness.report.tables import choose_baseline, model_frame, summary_frame
from harness.records import utc_now


def _atomic_write(path: Path, data: bytes | str) -> None:
    """Replace ``path`` atomically; world-readable (0644) like any file meant to be shared."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _integers_as_integers(frame: pd.DataFrame) -> pd.DataFrame:
    """Float columns holding only whole numbers (counts, bytes, ranks) -> nullable Int64,
    so the CSV says ``12`` rather than ``12.0`` where a missing value made pandas use floats."""
    frame = frame.copy()
    for name in frame.columns:
        column = frame[name]
        if column.dtype.kind == "f":
            values = column.dropna()
            if len(values) and (values == values.round()).all() and values.abs().max() < 2**53:
                frame[name] = column.astype("Int64")
    return frame


def default_out_dir(sweep_dir: str | Path) -> Path:
    """``reports/<sweep folder name>`` relative to the working directory."""
    return Path("reports") / Path(sweep_dir).resolve().name


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None, *, baseline: str | None = None,
                 data: SweepData | None = None) -> Path:
    """Write the report of ``sweep_dir`` (``results/<sweep>``) into ``out_dir``; return ``out_dir``.

    ``baseline`` names the strategy the relative columns compare against (default:
    ``explicit`` if the sweep has it, else the first strategy); ValueError if the sweep
    has no such strategy. FileNotFoundError if ``sweep_dir`` is not a folder. ``data``: the
    sweep's records already read (``load_report_data(sweep_dir)``), so they are not read twice.
    """
    data = data if data is not None else load_report_data(sweep_dir)
    baseline = choose_baseline(data, baseline)
    out = Path(out_dir) if out_dir is not None else default_out_dir(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)

    models = model_frame(data, baseline)
    tables = display_tables(models, baseline)
    reach = time_to_quality_table(data, models)
    if reach is not None:
        tables.append(reach)
    claims = claims_table(data, models)
    if claims is not None:
        tables.append(claims)
    figures = build_figures(data, models)
    content = build_content(data, tables, figures, baseline, generated=utc_now(), models=models)

    figure_files = {fig.name: f"{fig.name}.png" for fig in figures}
    for fig in figures:
        _atomic_write(out / figure_files[fig.name], fig.png)
    for name, _ in FIGURE_BUILDERS:  # figures an earlier report had but this one lacks
        if name not in figure_files:
            (out / f"{name}.png").unlink(missing_ok=True)

    summary = _integers_as_integers(summary_frame(data, models))
    _atomic_write(out / "summary.csv", summary.to_csv(index=False, lineterminator="\n"))
    model_csv = _integers_as_integers(models.drop(columns=["model_key"], errors="ignore"))
    _atomic_write(out / "models.csv", model_csv.to_csv(index=False, lineterminator="\n"))
    _atomic_write(out / "README.md", render_markdown(content, figure_files))
    _atomic_write(out / "index.html", render_html(content))
    return out
