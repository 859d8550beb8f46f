"""The live rollout at a glance: traffic split, per-arm 👍 rates with 95% intervals (a table
now, a chart over time), the decision rule's reading and what it still needs to decide."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from core.stats import wilson_interval

ARM_COLOURS = {"canary": "#d9480f", "production": "#1c7ed6"}


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f}%"


def rollout_markdown(overview: dict[str, Any]) -> str:
    """Production, the canary's step and split, per-arm 👍 rate with an interval, the rule's
    reading and what it needs to decide."""
    prod = overview["production_version"]
    lines = [f"**Production:** v{prod}{' (bare base model)' if not prod else ''}"]
    active = overview.get("active_rollout")
    if not active:
        lines.append("\nNo canary rollout is running.")
        return "\n".join(lines)
    r, d = active["rollout"], active["decision"]
    s = d["statistics"]
    share = r["steps"][r["step_index"]]
    steps = " → ".join(
        f"{'**' if i == r['step_index'] else ''}{100 * w:g}%{'**' if i == r['step_index'] else ''}"
        for i, w in enumerate(r["steps"])
    )
    lines.append(
        f"\n**Canary v{r['adapter_version']}** is *{r['status']}*, step "
        f"{r['step_index'] + 1} of {len(r['steps'])}: {steps} of new conversations."
    )
    lines.append(
        f"\n**Traffic split now:** canary {100 * share:g}% · production "
        f"{100 * (1 - share):g}% of new conversations"
    )
    lines.append(
        "\n| arm | 👍 | 👎 | 👍 rate | 95% interval | turns | errors |\n"
        "|---|---|---|---|---|---|---|"
    )
    for arm in ("canary", "production"):
        a = active[arm]
        n = a["up"] + a["down"]
        interval = wilson_interval(a["up"], n)
        shown = f"{_pct(interval[0])} – {_pct(interval[1])}" if interval else "n/a"
        lines.append(
            f"| {arm} | {a['up']} | {a['down']} | {_pct(a['up'] / n if n else None)} "
            f"| {shown} | {a['turns']} | {a['errors']} |"
        )
    if "p_non_inferior" in s:
        lines.append(
            f"\n**Decision rule:** P(canary not worse by more than "
            f"{100 * s['margin']:g} points) = {s['p_non_inferior']:.3f}, "
            f"P(worse by more than {50 * s['margin']:g}) = {s['p_worse']:.3f} "
            f"(decides at {s['confidence']:g})."
        )
    lines.append(f"\n**Reading now:** `{d['action']}` — {html.escape(d['reason'])}")
    if active.get("needs"):
        lines.append(f"\n**To decide it needs:** {html.escape(active['needs'])}")
    return "\n".join(lines)


def cumulative_series(
    points: list[dict[str, Any]],
) -> dict[str, list[tuple[datetime, float, float, float, int]]]:
    """Per arm, at each bucket: (time, cumulative 👍 rate, interval low, high, ratings)."""
    totals: dict[str, list[int]] = {}
    out: dict[str, list[tuple[datetime, float, float, float, int]]] = {}
    for p in sorted(points, key=lambda p: str(p["bucket"])):
        up_down = totals.setdefault(p["arm"], [0, 0])
        up_down[0] += p["up"]
        up_down[1] += p["down"]
        n = sum(up_down)
        interval = wilson_interval(up_down[0], n)
        if interval is None:
            continue
        when = (
            p["bucket"]
            if isinstance(p["bucket"], datetime)
            else datetime.fromisoformat(str(p["bucket"]))
        )
        out.setdefault(p["arm"], []).append((when, up_down[0] / n, *interval, n))
    return out


def evidence_svg(overview: dict[str, Any], width: int = 720, height: int = 240) -> str:
    """An inline SVG: each arm's cumulative 👍 rate over the rollout with its 95% band."""
    active = overview.get("active_rollout")
    if not active:
        return ""
    series = cumulative_series(active.get("series") or [])
    if not series:
        return (
            "<p id='evidence-empty'>No ratings on the rollout's answers yet: the chart of "
            "👍 rate per arm appears with the first votes.</p>"
        )
    left, right, top, bottom = 44, 170, 12, 28
    times = sorted({t for rows in series.values() for t, *_ in rows})
    t0, t1 = times[0].timestamp(), times[-1].timestamp()
    span = (t1 - t0) or 1.0

    def x(t: datetime) -> float:
        return left + (width - left - right) * ((t.timestamp() - t0) / span if t1 > t0 else 0.5)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - v)

    parts = [
        f"<svg id='evidence-chart' xmlns='http://www.w3.org/2000/svg' width='{width}' "
        f"height='{height}' role='img' aria-label='👍 rate per arm over time'>"
    ]
    for v in (0, 0.25, 0.5, 0.75, 1):
        parts.append(
            f"<line x1='{left}' x2='{width - right}' y1='{y(v):.1f}' y2='{y(v):.1f}' "
            f"stroke='#ddd'/><text x='4' y='{y(v) + 4:.1f}' font-size='11'>"
            f"{100 * v:.0f}%</text>"
        )
    for arm, rows in sorted(series.items()):
        colour = ARM_COLOURS.get(arm, "#555")
        band = [f"{x(t):.1f},{y(hi):.1f}" for t, _, _, hi, _ in rows] + [
            f"{x(t):.1f},{y(lo):.1f}" for t, _, lo, _, _ in reversed(rows)
        ]
        line = " ".join(f"{x(t):.1f},{y(rate):.1f}" for t, rate, *_ in rows)
        last = rows[-1]
        parts.append(f"<polygon points='{' '.join(band)}' fill='{colour}' fill-opacity='0.15'/>")
        parts.append(f"<polyline points='{line}' fill='none' stroke='{colour}' stroke-width='2'/>")
        for t, rate, lo, hi, _ in rows:  # each point with its interval as an error bar
            parts.append(
                f"<line x1='{x(t):.1f}' x2='{x(t):.1f}' y1='{y(lo):.1f}' "
                f"y2='{y(hi):.1f}' stroke='{colour}' stroke-opacity='0.6'/>"
                f"<circle cx='{x(t):.1f}' cy='{y(rate):.1f}' r='3' fill='{colour}'/>"
            )
        parts.append(
            f"<text x='{width - right + 6}' y='{y(last[1]) + 4:.1f}' font-size='12' "
            f"fill='{colour}'>{arm} {100 * last[1]:.0f}% (n={last[4]})</text>"
        )
    parts.append(
        f"<text x='{left}' y='{height - 8}' font-size='11'>"
        f"{times[0]:%Y-%m-%d %H:%M} UTC</text><text x='{width - right}' "
        f"y='{height - 8}' font-size='11' text-anchor='end'>{times[-1]:%H:%M}</text>"
    )
    parts.append(
        "</svg><p style='font-size:12px'>Cumulative 👍 rate of each arm's answers "
        "since the rollout started, with its 95% interval (bars and band).</p>"
    )
    return "".join(parts)
