"""Result rows, the printed table of ratios, and the raw figures as JSON."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path


def row(
    case: str,
    metric: str,
    value: float | None,
    unit: str,
    *,
    baseline: float | None = None,
    ratio: float | None = None,
    target: str | None = None,
    met: bool | None = None,
    note: str = "",
) -> dict:
    """One line of the table. `ratio` defaults to value / baseline; `met` is None when there is no target."""
    if ratio is None and baseline:
        ratio = value / baseline
    return {
        "case": case,
        "metric": metric,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "met": met,
        "note": note,
    }


def at_most(ratio: float | None, limit: float) -> bool | None:
    return None if ratio is None else ratio <= limit


def at_least(ratio: float | None, limit: float) -> bool | None:
    return None if ratio is None else ratio >= limit


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.4g}"


def format_table(rows: list[dict]) -> str:
    headers = ["case", "metric", "value", "unit", "baseline", "ratio", "target", "met"]
    lines = []
    for r in rows:
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append(
            [
                r["case"],
                r["metric"],
                _number(r["value"]),
                r["unit"],
                _number(r["baseline"]),
                ratio,
                r["target"] or "",
                met,
            ]
        )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(headers)
    ]
    right = {2, 4, 5}

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [fmt(headers), fmt(["-" * w for w in widths])]
    out.extend(fmt(line) for line in lines)
    return "\n".join(out)


def format_markdown(rows: list[dict]) -> str:
    out = [
        "| case | metric | value | unit | baseline | ratio | target | met | note |",
        "|---|---|--:|---|--:|--:|---|---|---|",
    ]
    for r in rows:
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        out.append(
            f"| {r['case']} | {r['metric']} | {_number(r['value'])} | {r['unit']} | {_number(r['baseline'])} "
            f"| {ratio} | {r['target'] or ''} | {met} | {r['note'].replace('|', '/')} |"
        )
    return "\n".join(out)


def machine() -> dict:
    import os

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")
