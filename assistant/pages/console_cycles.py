"""The console's Training cycles tab: one page per cycle (pick it, or open /console/?cycle=ID):
live progress while it trains, then what the dataset kept and dropped, what validation measured
against production with each threshold, and why the adapter was accepted or rejected."""

# No `from __future__ import annotations`: Gradio reads gr.Request / gr.SelectData hints.

import html
from typing import Any

from assistant.turns.operator import Operator
from errors import AssistantError

# Progress keys the cycle row may carry (store/cycles.py decides; a missing one is not shown).


def _num(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def progress_text(c: dict[str, Any]) -> str:
    """ "step 12 of 40 · loss 1.234 · ETA 3 min" from a cycle row (core.domain.Cycle: `loss` is
    the latest held-out loss, or the training loss before the first evaluation)."""
    parts = [f"step {c.get('step') or 0} of {c['total']}"] if c.get("total") else []
    if c.get("loss") is not None:
        parts.append(f"loss {float(c['loss']):.3f}")
    eta = c.get("eta_s")
    if isinstance(eta, (int, float)) and c.get("status") == "running":
        parts.append(f"ETA {eta / 60:.0f} min" if eta >= 90 else f"ETA {eta:.0f} s")
    return " · ".join(parts)


def _when(at: Any) -> str:
    return str(at)[:19].replace("T", " ")


def cycle_label(c: dict[str, Any]) -> str:
    """The cycle as the picker lists it: start time, trigger, status."""
    return f"{_when(c['started_at'])[:16]} · {c['trigger']} · {c['status']}"


def _dataset_md(d: dict[str, Any] | None) -> list[str]:
    if not d:
        return ["### Dataset", "No dataset was built (see the reason above)."]
    lines = [
        "### Dataset",
        f"`{html.escape(d['id'])}`: {d['examples']} turns kept.",
        "",
        "| split | desirable | undesirable |",
        "|---|---|---|",
    ]
    for split, labels in sorted(d["counts"].items(), reverse=True):
        lines.append(f"| {split} | {labels.get('desirable', 0)} | {labels.get('undesirable', 0)} |")
    dropped = sorted(d["dropped"].items(), key=lambda kv: (-kv[1], kv[0]))
    lines += ["", f"**Dropped:** {sum(n for _, n in dropped)}" + (":" if dropped else "")]
    if dropped:
        lines += ["", "| reason | turns/examples |", "|---|---|"]
        lines += [f"| {html.escape(reason)} | {n} |" for reason, n in dropped]
    scrubbed = ", ".join(f"{k} {v}" for k, v in d.get("scrubbed", {}).items())
    lines += ["", f"**Personal data replaced:** {scrubbed or 'none found'}"]
    return lines


def _validation_md(v: dict[str, Any]) -> list[str]:
    if not v:
        return ["### Validation against production", "Validation did not run."]
    lines = [
        "### Validation against production",
        f"**{'Passed' if v.get('passed') else 'Failed'}**"
        + (
            f": {html.escape('; '.join(v.get('reasons') or []))}"
            if not v.get("passed")
            else ": every check passed."
        ),
        "",
        "| check | result | candidate | production | threshold | why |",
        "|---|---|---|---|---|---|",
    ]
    icons = {"passed": "✅ passed", "failed": "❌ failed", "skipped": "➖ skipped"}
    for c in v.get("checks") or []:
        lines.append(
            f"| {c['name']} | {icons.get(c['status'], c['status'])} | "
            f"{_num(c.get('candidate'))} | {_num(c.get('production'))} | "
            f"{_num(c.get('threshold'))} | {html.escape(str(c.get('reason', '')))} |"
        )
    return lines


def _curve(points: Any) -> str | None:
    """'10.811 → 10.795 over 4 steps' from [[step, loss], ...] (None if not such a list)."""
    if (
        not isinstance(points, list)
        or not points
        or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in points)
    ):
        return None
    return f"{float(points[0][1]):.3f} → {float(points[-1][1]):.3f} (step {points[-1][0]})"


def _train_line(train: dict[str, Any]) -> str:
    """Steps, the best held-out loss and the loss curves of the train report."""
    parts = []
    for key, label in (
        ("steps", "steps"),
        ("total_steps", "of"),
        ("best_heldout_loss", "best held-out loss"),
        ("stopped", "stopped"),
    ):
        if train.get(key) is not None and not isinstance(train[key], (list, dict)):
            parts.append(f"{label} {_num(train[key])}")
    for key, label in (("train_loss", "train loss"), ("heldout_loss", "held-out loss")):
        curve = _curve(train.get(key))
        if curve:
            parts.append(f"{label} {curve}")
        elif isinstance(train.get(key), (int, float)):
            parts.append(f"{label} {_num(float(train[key]))}")
    return ", ".join(parts) or "no training figures were recorded"


def cycle_markdown(report: dict[str, Any]) -> str:
    """The cycle page: header, verdict, progress or timings, dataset, training, validation."""
    c = report["cycle"]
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in (c.get("stage_timings") or {}).items())
    lines = [
        f"## Cycle {html.escape(c['id'][:8])} — {c['status']}",
        f"Started {_when(c['started_at'])} UTC by {html.escape(c['trigger'])}"
        + (f", ended {_when(c['ended_at'])} UTC" if c.get("ended_at") else ""),
        "",
        f"**Verdict:** {html.escape(report['verdict'])}",
    ]
    if c["status"] == "running":
        lines += ["", f"**Now:** {html.escape(c.get('stage') or 'starting')} {progress_text(c)}"]
    if timings:
        lines += ["", f"**Stage durations:** {timings}"]
    lines += [""] + _dataset_md(report.get("dataset"))
    train = report.get("train") or {}
    if train:
        lines += ["", "### Training", _train_line(train)]
    lines += [""] + _validation_md(report.get("validation") or {})
    if report.get("adapter"):
        a = report["adapter"]
        lines += ["", f"Adapter v{a['version']} (parent v{a['parent']}) is now **{a['status']}**."]
    return "\n".join(lines)


def build_cycles_tab(operator: Operator) -> tuple[Any, list[Any]]:
    """The tab's components; returns its load function and outputs for the console."""
    import gradio as gr

    def choices() -> list[tuple[str, str]]:
        return [(cycle_label(c), c["id"]) for c in operator.overview()["cycles"]]

    def show(cycle_id: str | None) -> str:
        if not cycle_id:
            return "Pick a cycle to see what it did."
        try:
            return cycle_markdown(operator.cycle_report(cycle_id))
        except AssistantError as exc:
            raise gr.Error(str(exc)) from None

    def load(request: gr.Request) -> tuple[Any, str]:
        options = choices()
        wanted = request.query_params.get("cycle") if request else None
        known = [cid for _, cid in options]
        chosen = wanted if wanted in known else (known[0] if known else None)
        return gr.update(choices=options, value=chosen), show(chosen)

    with gr.Row():
        pick = gr.Dropdown(label="Cycle (newest first)", choices=[], elem_id="cycle-pick", scale=4)
        again = gr.Button("Refresh", elem_id="btn-cycle-refresh", scale=1)
    page = gr.Markdown(elem_id="cycle-report")
    pick.change(show, inputs=[pick], outputs=[page], api_visibility="private")
    again.click(show, inputs=[pick], outputs=[page], api_visibility="private")
    return load, [pick, page]
