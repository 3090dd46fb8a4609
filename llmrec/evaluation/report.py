"""A self-contained HTML report of a results dict: tables plus inline SVG plots, no server, no scripts.

Per task: a metrics table (value and 95 % CI per variant), the primary metric per variant with CI bars,
the primary metric against k per retriever (when several k were run), and for rating tasks the signed
error distribution of the most informative variants.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from llmrec.errors import DataError
from llmrec.evaluation.metrics import get_metric
from llmrec.io import write_text_atomic

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.3rem .6rem}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#e8f5e9}.ci{color:#777;font-size:.8rem}figure{display:inline-block;margin:.5rem 1rem .5rem 0}
figcaption{font-size:.85rem;color:#444}code{background:#f5f5f5;padding:0 .2rem}
"""
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x: float | None) -> str:
    if x is None:  # an undefined metric (null in results.json)
        return "n/a"
    return f"{x:.4f}" if abs(x) < 100 else f"{x:.1f}"


def bar_chart(names: list[str], values: list[float], lows: list[float | None], highs: list[float | None],
              title: str) -> str:
    """Horizontal bars with CI whiskers."""
    row_h, left, width = 22, 230, 360
    h = row_h * len(names) + 40
    top = max([v for v in values] + [x for x in highs if x is not None] + [1e-9])
    scale = width / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 70}" height="{h}" role="img">',
             f'<title>{_e(title)}</title>']
    for i, (n, v, lo, hi) in enumerate(zip(names, values, lows, highs, strict=True)):
        y = 10 + i * row_h
        parts.append(f'<text x="{left - 6}" y="{y + 14}" font-size="11" text-anchor="end">{_e(n)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{max(v * scale, 0.5):.1f}" height="{row_h - 8}" '
                     f'fill="{_COLORS[0] if not n.startswith("baseline") else _COLORS[7]}"/>')
        if lo is not None and hi is not None:
            yc = y + row_h / 2
            parts.append(f'<line x1="{left + lo * scale:.1f}" x2="{left + hi * scale:.1f}" y1="{yc}" y2="{yc}" '
                         'stroke="#000" stroke-width="1.2"/>')
        parts.append(f'<text x="{left + v * scale + 4:.1f}" y="{y + 14}" font-size="10">{_fmt(v)}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="5" y2="{h - 25}" stroke="#444"/>')
    parts.append(f'<text x="{left}" y="{h - 8}" font-size="11">{_e(title)} (bars: value, lines: 95% CI)</text>')
    return "".join(parts) + "</svg>"


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str = "k") -> str:
    w, h, pad = 420, 260, 45
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    if not xs:
        return ""
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1e-6
    sx = lambda x: pad + (x - x0) / (x1 - x0) * (w - 2 * pad)  # noqa: E731
    sy = lambda y: h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + 140}" height="{h}" role="img">',
             f'<title>{_e(title)}</title>',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#444"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#444"/>',
             f'<text x="{w / 2}" y="{h - 10}" font-size="11">{_e(xlabel)}</text>',
             f'<text x="4" y="{pad - 10}" font-size="11">{_e(title)}</text>',
             f'<text x="{pad - 4}" y="{sy(y0)}" font-size="9" text-anchor="end">{_fmt(y0)}</text>',
             f'<text x="{pad - 4}" y="{sy(y1) + 8}" font-size="9" text-anchor="end">{_fmt(y1)}</text>']
    for x in sorted(set(xs)):
        parts.append(f'<text x="{sx(x)}" y="{h - pad + 14}" font-size="9" text-anchor="middle">{x:g}</text>')
    for i, (name, pts) in enumerate(series.items()):
        c = _COLORS[i % len(_COLORS)]
        pts = sorted(pts)
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"/>' for x, y in pts]
        parts.append(f'<text x="{w - pad + 10}" y="{pad + 14 * i}" font-size="11" fill="{c}">{_e(name)}</text>')
    return "".join(parts) + "</svg>"


def histogram_chart(edges: list[float], counts: list[int], title: str) -> str:
    w, h, pad = 300, 170, 30
    n = len(counts)
    top = max(counts + [1])
    bw = (w - 2 * pad) / max(n, 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img"><title>{_e(title)}</title>']
    for i, c in enumerate(counts):
        bh = c / top * (h - 2 * pad)
        centre = (edges[i] + edges[i + 1]) / 2
        fill = "#2ca02c" if abs(centre) < 0.5 else "#1f77b4"
        parts.append(f'<rect x="{pad + i * bw:.1f}" y="{h - pad - bh:.1f}" width="{bw - 1:.1f}" height="{bh:.1f}" '
                     f'fill="{fill}"/>')
    for e in (edges[0], 0.0, edges[-1]):
        x = pad + (e - edges[0]) / (edges[-1] - edges[0]) * (w - 2 * pad)
        parts.append(f'<text x="{x:.1f}" y="{h - pad + 12}" font-size="9" text-anchor="middle">{e:g}</text>')
    parts.append(f'<text x="{pad}" y="14" font-size="11">{_e(title)}</text>')
    parts.append(f'<text x="{w / 2}" y="{h - 4}" font-size="9" text-anchor="middle">prediction - gold</text>')
    return "".join(parts) + "</svg>"


def _task_section(name: str, task: dict[str, Any]) -> str:
    variants = {v: r for v, r in task["variants"].items() if r.get("metrics")}
    spec = task.get("spec", {})
    out = [f"<h2>{_e(name)}</h2>",
           f"<p>{_e(spec.get('description', ''))} &mdash; {task.get('n', '?')} examples, output "
           f"<code>{_e(spec.get('output', {}).get('type', ''))}</code>, scoring mode "
           f"<code>{_e(spec.get('scoring', ''))}</code>.</p>"]
    data = task.get("dataset")
    if data:  # interaction tasks: which dataset, in its own nouns ("57 users, 120 books")
        out.append(f"<p>Dataset <b>{_e(data['name'])}</b> (<code>{_e(data['spec'])}</code>): {data['users']} users, "
                   f"{data['items']} {_e(data['items_noun'])}, {data['interactions']} {_e(data['items_noun'])} "
                   f"{_e(data['interacted'])}.</p>")
    if not variants:
        return "".join(out) + "<p>No golds: predictions written, nothing scored.</p>"
    metrics = list(next(iter(variants.values()))["metrics"])
    primary = metrics[0]
    try:
        higher = get_metric(primary).higher_is_better
    except KeyError:
        higher = True
    vals = {v: r["metrics"][primary]["value"] for v, r in variants.items()
            if r["metrics"].get(primary, {}).get("value") is not None}
    best = (max if higher else min)(vals, key=vals.get) if vals else None
    out.append("<table><tr><th>variant</th><th>method</th>" + "".join(f"<th>{_e(m)}</th>" for m in metrics) + "</tr>")
    for v, r in variants.items():
        cells = []
        for m in metrics:
            x = r["metrics"].get(m)
            if x is None:
                cells.append("<td></td>")
                continue
            ci = (f'<br><span class="ci">[{_fmt(x["ci_low"])}, {_fmt(x["ci_high"])}]</span>'
                  if "ci_low" in x else "")
            cells.append(f'<td class="num">{_fmt(x["value"])}{ci}</td>')
        cls = ' class="best"' if v == best else ""
        out.append(f"<tr{cls}><td>{_e(v)}</td><td>{_e(r.get('method', ''))}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    names = list(vals)
    m = [variants[v]["metrics"][primary] for v in names]
    out.append(f"<figure>{bar_chart(names, [x['value'] for x in m], [x.get('ci_low') for x in m], [x.get('ci_high') for x in m], f'{primary} per variant')}"
               f"<figcaption>{_e(primary)} per variant ({'higher' if higher else 'lower'} is better)</figcaption></figure>")
    series: dict[str, list[tuple[float, float]]] = {}
    for v, r in variants.items():
        if r.get("retriever") not in (None, "", "none") and r.get("k"):
            suffix = v.split("/", 1)[1] if "/" in v else ""
            if v in vals:
                series.setdefault(f"{r['retriever']}/{suffix}" if suffix else r["retriever"], []).append(
                    (float(r["k"]), vals[v]))
    series = {s: pts for s, pts in series.items() if len(pts) >= 2}
    if series:
        out.append(f"<figure>{line_chart(series, f'{primary} vs k')}<figcaption>{_e(primary)} against the number "
                   "of retrieved profile items</figcaption></figure>")
    hists = [(v, r["error_histogram"]) for v, r in variants.items() if r.get("error_histogram")]
    if hists:
        keep = [h for h in hists if h[0] == best or "no-profile" in h[0] or h[0] == "baseline:user-mean"][:4]
        out.append("<h3>Rating error distribution</h3>")
        for v, hist in keep or hists[:3]:
            out.append(f"<figure>{histogram_chart(hist['edges'], hist['counts'], v)}</figure>")
    return "".join(out)


def render_report(results: dict[str, Any]) -> str:
    names = [m for m in results.get("models") or [results.get("model")] if m] + [
        f"baseline:{b}" for b in (results.get("config") or {}).get("baselines", ())]
    title = f"llmrec evaluation: {', '.join(names) or 'baselines'}"
    body = [f"<h1>{_e(title)}</h1>"]
    for name, task in results.get("tasks", {}).items():
        body.append(_task_section(name, task))
    for name, group in (results.get("groups") or {}).items():
        body.append(f"<h2>group {_e(name)} (macro average over {_e(', '.join(group['tasks']))})</h2><table>")
        for v, ms in group["variants"].items():
            body.append(f"<tr><td>{_e(v)}</td>" + "".join(f"<td>{_e(k)} {_fmt(x)}</td>" for k, x in ms.items())
                        + "</tr>")
        body.append("</table>")
    cfg = json.dumps({k: results.get(k) for k in ("config", "versions", "machine")}, indent=2, default=str)
    body.append(f"<h2>Configuration</h2><pre>{_e(cfg)}</pre>")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def check_results(results: Any, path: str | Path) -> dict[str, Any]:
    """``results`` if it has the shape ``llmrec eval run`` writes (tasks -> variants -> metrics -> value);
    else a DataError naming ``path``, the task/variant and the field."""
    if not isinstance(results, dict):
        raise DataError(f"expected a results object from llmrec eval run, got a JSON {type(results).__name__}",
                        path=path, record="top level")
    tasks = results.get("tasks")
    if not isinstance(tasks, dict):
        raise DataError("missing, or not an object of tasks", path=path, field="tasks")
    for name, task in tasks.items():
        if not isinstance(task, dict) or not isinstance(task.get("variants"), dict):
            raise DataError("expected an object with 'variants'", path=path, record=f"task {name}",
                            field="variants")
        for v, row in task["variants"].items():
            metrics = row.get("metrics", {}) if isinstance(row, dict) else None
            if not isinstance(metrics, dict):
                raise DataError("expected an object (with 'metrics')", path=path, record=f"task {name}",
                                field=f"variants.{v}")
            for m, x in metrics.items():
                value = x.get("value") if isinstance(x, dict) else "?"
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise DataError("expected {\"value\": number}", path=path, record=f"task {name}",
                                    field=f"variants.{v}.metrics.{m}")
    groups = results.get("groups") or {}
    if not isinstance(groups, dict) or not all(
            isinstance(g, dict) and isinstance(g.get("tasks"), list) and isinstance(g.get("variants"), dict)
            and all(isinstance(ms, dict) for ms in g["variants"].values()) for g in groups.values()):
        raise DataError("expected an object of {tasks: [...], variants: {...}}", path=path, field="groups")
    return results


def is_report(path: Path) -> bool:
    """Whether ``path`` is a report this module wrote (so writing it again destroys nothing)."""
    try:
        with path.open("rb") as f:
            head = f.read(200)
    except OSError:
        return False
    return path.is_file() and head.startswith(b"<!DOCTYPE html>") and b"<title>llmrec evaluation" in head


def write_report(results: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    write_text_atomic(path, render_report(results))
    return path
