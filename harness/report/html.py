"""``index.html``: one self-contained page (inline CSS, figures as base64 PNG, no scripts).

Nothing is fetched from the network: no fonts, stylesheets or scripts. A print
stylesheet keeps tables inside the page width, opens the collapsed sections and keeps
figures whole. Every string that comes from the records (run names, reasons, job text,
environment values) goes through ``html.escape``.
"""
from __future__ import annotations

import base64
from html import escape

from harness.report.content import METRIC_GLOSSARY, ReportContent
from harness.report.figures import ReportFigure
from harness.report.tables import Table

CSS = """
:root { --fg: #1d1d1f; --muted: #5f6368; --line: #d9dce1; --head: #f3f4f6; --accent: #b3261e; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0 auto; padding: 24px 28px 48px; max-width: 1280px; }
h1 { font-size: 1.6em; margin: 0 0 .3em; }
h2 { font-size: 1.25em; margin: 1.8em 0 .5em; padding-bottom: .2em; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05em; margin: 1.2em 0 .3em; }
p.caption, figcaption, .muted { color: var(--muted); font-size: .9em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: .6em 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; margin: .4em 0 1em; }
table { border-collapse: collapse; font-size: .86em; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: var(--head); font-weight: 600; white-space: nowrap; }
td.text, th.text { text-align: left; }
td.wrap { text-align: left; white-space: normal; overflow-wrap: anywhere; min-width: 16em; }
tbody tr:hover { background: #fafbfc; }
@media screen { td.num, td.text { white-space: nowrap; } }
figure { margin: 1em 0 2em; break-inside: avoid; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid var(--line); }
pre { background: #f6f8fa; padding: 10px 12px; overflow-x: auto; font-size: .85em; white-space: pre-wrap;
      overflow-wrap: anywhere; }
details { margin: .5em 0; }
summary { cursor: pointer; font-weight: 600; }
.warning { color: var(--accent); }
.state-failed { color: var(--accent); font-weight: 600; }
footer { margin-top: 3em; color: var(--muted); font-size: .85em; }
@media print {
  body { font-size: 9.5pt; max-width: none; padding: 0; }
  h2 { break-after: avoid; }
  .table-wrap { overflow: visible; }
  table { font-size: 7.5pt; width: 100%; }
  th { white-space: normal; }
  th, td { padding: 2px 4px; }
  figure img { border: none; max-height: 24cm; width: auto; }
  pre { white-space: pre-wrap; }
  details > summary { list-style: none; }
  details::details-content { content-visibility: visible; display: block; }
  tbody tr:hover { background: none; }
}
"""


def _table(table: Table, *, heading: str = "h3", wrap_last: bool = False) -> str:
    head = "".join(f'<th class="{"text" if c.kind == "text" or i == 0 else "num"}"'
                   + (f' title="{escape(c.help)}"' if c.help else "") + f">{escape(c.header)}</th>"
                   for i, c in enumerate(table.columns))
    body = []
    for r, row in enumerate(table.rows):
        note = table.row_notes[r] if r < len(table.row_notes) and table.row_notes[r] else ""
        cells = []
        for i, (value, col) in enumerate(zip(row, table.columns)):
            cls = "wrap" if wrap_last and i == len(row) - 1 else ("text" if col.kind == "text" or i == 0 else "num")
            if col.header == "state":
                cls += f" state-{escape(value)}"
            cells.append(f'<td class="{cls}">{escape(value)}</td>')
        title = f' title="{escape(note)}"' if note else ""
        body.append(f"<tr{title}>{''.join(cells)}</tr>")
    caption = f'<p class="caption">{escape(table.caption)}</p>' if table.caption else ""
    return (f"<{heading}>{escape(table.title)}</{heading}>\n{caption}\n<div class=\"table-wrap\"><table>"
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>")


def _figure(fig: ReportFigure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (f'<figure id="fig-{escape(fig.name)}"><h3>{escape(fig.title)}</h3>'
            f'<img alt="{escape(fig.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(fig.caption)}</figcaption></figure>")


def _pairs(rows: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows) + "</dl>"


def render_html(content: ReportContent) -> str:
    """The whole page as a string."""
    parts = [f"<h1>{escape(content.title)}</h1>", _pairs(content.facts),
             f'<p><strong>{escape(content.counts)}</strong></p>']
    parts += [f'<p class="muted">{escape(note)}</p>' for note in content.notes]
    nav = [("results", "Results"), ("figures", "Figures"), ("runs", "Runs"), ("what-ran", "What ran"),
           ("definitions", "Definitions")]
    parts.append('<p class="muted">' + " \u00b7 ".join(f'<a href="#{a}">{t}</a>' for a, t in nav) + "</p>")

    parts.append('<h2 id="results">Results</h2>')
    if content.tables:
        parts += [_table(t) for t in content.tables]
    else:
        parts.append("<p>No finished runs yet: nothing to tabulate.</p>")

    parts.append('<h2 id="figures">Figures</h2>')
    if content.figures:
        parts += [_figure(f) for f in content.figures]
    else:
        parts.append("<p>No figures: the records hold no data to plot yet.</p>")

    parts.append('<h2 id="runs">Runs</h2>')
    if content.failed:
        parts.append(_table(content.failed, wrap_last=True))
    if content.unfinished:
        parts.append(_table(content.unfinished))
    if not content.failed and not content.unfinished:
        parts.append("<p>Every run finished.</p>" if content.all_runs else "<p>No runs recorded yet.</p>")
    if content.all_runs:
        parts.append("<details><summary>All runs</summary>" + _table(content.all_runs) + "</details>")

    parts.append('<h2 id="what-ran">What ran</h2>')
    parts += [f'<p class="warning">Warning: {escape(w)}.</p>' for w in content.env_warnings]
    parts.append("<h3>Environment of the sweep (sweep.json)</h3>")
    parts.append(_pairs(content.env) if content.env else "<p>Not recorded.</p>")
    parts.append("<h3>Environment of the runs (env.json)</h3>")
    parts.append(_pairs(content.run_env) if content.run_env else "<p>No run has recorded its environment yet.</p>")
    if content.job_text is not None:
        parts.append(f"<details><summary>Job file: {escape(content.job_name)}</summary>"
                     f"<pre>{escape(content.job_text)}</pre></details>")
    else:
        parts.append("<p>The job file (job.yaml) is missing from the records.</p>")

    parts.append('<h2 id="definitions">Definitions</h2><dl class="facts">')
    parts += [f"<dt><code>{escape(k)}</code></dt><dd>{escape(v)}</dd>" for k, v in METRIC_GLOSSARY]
    parts.append("</dl>")
    parts.append(f"<footer>Generated {escape(content.generated)} by <code>python -m harness.report</code> "
                 "from the sweep records alone; regenerate any time.</footer>")
    body = "\n".join(parts)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<link rel=\"icon\" href=\"data:,\">\n"
            f"<title>{escape(content.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
