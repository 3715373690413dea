"""The demo's report: an HTML page with an inline SVG chart, and a PNG when matplotlib is there."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

W, H, PAD = 900, 360, 50


MARKS = ("serving", "drift injected", "drift detected", "retraining", "promoted", "rolled out",
         "canary started", "canary step", "canary rolled back", "canary promoted")
"""The loop's events drawn as vertical marks (the canary ones with ``demo --rollouts``)."""


def _scale(values: list[float], lo: float, hi: float, out_lo: float, out_hi: float) -> list[float]:
    span = (hi - lo) or 1.0
    return [out_lo + (v - lo) / span * (out_hi - out_lo) for v in values]


def svg_chart(doc: dict[str, Any]) -> str:
    """Error rate (and drift score) over time, with the loop's events as vertical marks."""
    pts = [p for p in doc.get("points", []) if p.get("error_rate") is not None]
    if not pts:
        return "<p>no traffic was recorded</p>"
    t = [p["t"] for p in pts]
    t_hi = max(t + [e["t"] for e in doc.get("events", [])]) or 1.0
    xs = _scale(t, 0, t_hi, PAD, W - PAD)
    err = _scale([p["error_rate"] for p in pts], 0, 1, H - PAD, PAD)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
             f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" stroke="#999"/>']
    for frac in (0, 0.25, 0.5, 0.75, 1):
        y = H - PAD - frac * (H - 2 * PAD)
        parts.append(f'<text x="{PAD - 6}" y="{y + 4}" text-anchor="end">{frac:.2f}</text>')
    parts.append(f'<polyline fill="none" stroke="#c0392b" stroke-width="2" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, err))}"/>')
    scored = [(x, p["drift_score"]) for x, p in zip(xs, pts) if p.get("drift_score") is not None]
    if scored:
        top = max(1.0, max(s for _, s in scored))
        ys = _scale([s for _, s in scored], 0, top, H - PAD, PAD)
        parts.append(f'<polyline fill="none" stroke="#2c7fb8" stroke-width="1.5" stroke-dasharray="4 3" '
                     f'points="{" ".join(f"{x:.1f},{y:.1f}" for (x, _), y in zip(scored, ys))}"/>')
    marks = [e for e in doc.get("events", []) if e["event"] in MARKS]
    for i, e in enumerate(marks):
        x = _scale([e["t"]], 0, t_hi, PAD, W - PAD)[0]
        parts.append(f'<line x1="{x:.1f}" y1="{PAD}" x2="{x:.1f}" y2="{H - PAD}" stroke="#555" stroke-dasharray="2 2"/>')
        parts.append(f'<text x="{x + 3:.1f}" y="{PAD + 12 + 12 * (i % 4)}">{html.escape(e["event"])}</text>')
    parts.append(f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">seconds since start — red: error rate (last 250 labelled rows), blue dashed: drift score</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_report(out: Path, doc: dict[str, Any]) -> list[Path]:
    rows = "".join(
        f"<tr><td>{e['t']:.1f}s</td><td>{html.escape(str(e['event']))}</td><td>{html.escape(str({k: v for k, v in e.items() if k not in ('t', 'event')}))}</td></tr>"
        for e in doc.get("events", [])
    )
    figures = "".join(
        f"<li>{k.replace('_', ' ')}: <b>{doc[k]}</b></li>"
        for k in ("error_rate_before_drift", "error_rate_after_drift", "error_rate_after_promotion", "first_version", "promoted_version")
        if k in doc
    )
    canaries = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{html.escape(str(c.get('version')))}</td><td>{html.escape(str(c.get('phase')))}</td>"
        f"<td>{html.escape(str(c.get('reason')))}</td><td>{c.get('challenger_error_rate')} (n={c.get('challenger_labelled')})</td>"
        f"<td>{c.get('champion_error_rate')} (n={c.get('champion_labelled')})</td></tr>"
        for label, c in (("worse challenger", doc.get("canary_worse")), ("good challenger", doc.get("canary_good"))) if c
    )
    if canaries:
        canaries = ("<h2>Canary rollouts on live evidence</h2><table border='1' cellpadding='3'><tr><th></th><th>version</th>"
                    "<th>outcome</th><th>why</th><th>challenger error rate</th><th>champion error rate</th></tr>"
                    f"{canaries}</table>")
    drifted = "".join(
        f"<tr><td>{html.escape(str(d['feature']))}</td><td>{html.escape(str(d.get('check')))}</td><td>{d.get('effect')}</td>"
        f"<td>{d.get('importance')}</td><td>{'important' if d.get('important') else 'unimportant'}</td></tr>"
        for d in doc.get("drifted_features") or []
    )
    if drifted:
        drifted = ("<h2>Drifted features, by importance to the model</h2><table border='1' cellpadding='3'><tr><th>feature</th>"
                   "<th>check</th><th>effect</th><th>permutation importance</th><th></th></tr>"
                   f"{drifted}</table>")
    page = (f"<!doctype html><meta charset='utf-8'><title>mlops-operator demo</title>"
            f"<h1>mlops-operator: the loop, closed {'✔' if doc.get('completed') else '✘'}</h1><ul>{figures}</ul>"
            f"{svg_chart(doc)}{drifted}{canaries}<h2>Timeline</h2><table border='1' cellpadding='3'>{rows}</table>")
    written = [out / "report.html"]
    written[0].write_text(page)
    png = _png(out / "report.png", doc)
    return written + ([png] if png else [])


def _png(path: Path, doc: dict[str, Any]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pts = [p for p in doc.get("points", []) if p.get("error_rate") is not None]
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=100)
    ax.plot([p["t"] for p in pts], [p["error_rate"] for p in pts], color="#c0392b", label="error rate")
    scored = [p for p in pts if p.get("drift_score") is not None]
    if scored:
        ax.plot([p["t"] for p in scored], [p["drift_score"] for p in scored], color="#2c7fb8", linestyle="--", label="drift score")
    for e in doc.get("events", []):
        if e["event"] in MARKS:
            ax.axvline(e["t"], color="#555", linestyle=":", linewidth=1)
            ax.text(e["t"], ax.get_ylim()[1] * 0.95, " " + e["event"], rotation=90, va="top", fontsize=8)
    ax.set_xlabel("seconds since start")
    ax.set_ylim(bottom=0)
    ax.legend(loc="center left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
