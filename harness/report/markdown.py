"""``README.md``: the report in GitHub-flavoured Markdown, figures as PNG files next to it.

Same content as the HTML page: facts, tables (GFM pipe tables), figures linked
relatively (``![title](memory_vs_depth.png)``), failed and unfinished runs, the
environment and the job file in a fenced block. Text from the records is escaped for
tables (pipes, newlines) and for inline Markdown/HTML, so a run name cannot break the
layout or inject markup.
"""
from __future__ import annotations

import re

from harness.report.content import METRIC_GLOSSARY, ReportContent
from harness.report.tables import Table

_INLINE_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#!~])")


def md_escape(value: str) -> str:
    """Escape Markdown/HTML specials and flatten newlines, for inline text and table cells."""
    value = " ".join(str(value).splitlines())
    return _INLINE_SPECIAL.sub(r"\\\1", value).replace("&", "&amp;")


def md_table(table: Table, *, heading: str = "###") -> str:
    """A GFM pipe table with its title and caption."""
    header = "| " + " | ".join(md_escape(c.header) for c in table.columns) + " |"
    align = "| " + " | ".join(":--" if c.kind == "text" or i == 0 else "--:" for i, c in enumerate(table.columns)) + " |"
    rows = ["| " + " | ".join(md_escape(cell) for cell in row) + " |" for row in table.rows]
    caption = f"\n{md_escape(table.caption)}\n" if table.caption else ""
    return f"{heading} {md_escape(table.title)}\n{caption}\n" + "\n".join([header, align, *rows]) + "\n"


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * max(3, longest + 1)
    return f"{fence}yaml\n{text.rstrip()}\n{fence}"


def _pairs(rows: list[tuple[str, str]]) -> str:
    return "\n".join(f"- **{md_escape(k)}**: {md_escape(v)}" for k, v in rows)


def render_markdown(content: ReportContent, figure_files: dict[str, str]) -> str:
    """The README text; ``figure_files`` maps a figure's name to its PNG file name."""
    out = [f"# {md_escape(content.title)}", "", _pairs(content.facts), "", f"**{md_escape(content.counts)}**", ""]
    out += [f"{md_escape(n)}\n" for n in content.notes]
    out += ["## Results", ""]
    out += [md_table(t) for t in content.tables] or ["No finished runs yet: nothing to tabulate.\n"]
    out += ["## Figures", ""]
    for fig in content.figures:
        out += [f"### {md_escape(fig.title)}", "", f"![{md_escape(fig.title)}]({figure_files[fig.name]})", "",
                md_escape(fig.caption), ""]
    if not content.figures:
        out += ["No figures: the records hold no data to plot yet.", ""]
    out += ["## Runs", ""]
    out += [md_table(t) for t in (content.failed, content.unfinished) if t is not None]
    if content.failed is None and content.unfinished is None:
        out += ["Every run finished." if content.all_runs is not None else "No runs recorded yet.", ""]
    if content.all_runs is not None:
        out += ["<details><summary>All runs</summary>", "", md_table(content.all_runs, heading="####"), "</details>", ""]
    out += ["## What ran", ""]
    out += [f"**Warning**: {md_escape(w)}.\n" for w in content.env_warnings]
    out += ["### Environment of the sweep (sweep.json)", "", _pairs(content.env) or "Not recorded.", "",
            "### Environment of the runs (env.json)", "",
            _pairs(content.run_env) or "No run has recorded its environment yet.", ""]
    if content.job_text is not None:
        out += [f"### Job file: {md_escape(content.job_name)}", "", _fence(content.job_text), ""]
    out += ["## Definitions", ""]
    out += [f"- `{k}`: {md_escape(v)}" for k, v in METRIC_GLOSSARY]
    out += ["", f"_Generated {md_escape(content.generated)} by `python -m harness.report` from the sweep records "
            "alone; regenerate any time._", ""]
    return "\n".join(out)
