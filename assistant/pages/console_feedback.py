"""The console's Feedback tab: recent 👎 (or 👍) with comments and corrections, filtered by
version, period, reason and words; an operator can exclude a vote from training (and include it
again), each change recorded in the audit log."""

# No `from __future__ import annotations`: Gradio reads gr.Request / gr.SelectData hints.

import html
from typing import Any

from assistant.turns.operator import Operator
from errors import AssistantError
from store.logs import REASONS

ACTOR = "operator:console"
PERIODS = {"last 24 hours": 1.0, "last 7 days": 7.0, "last 30 days": 30.0, "all time": None}
RATINGS = {"👎 only": "down", "👍 only": "up", "all votes": "any"}
HEADERS = [
    "voted (UTC)",
    "version",
    "arm",
    "reason",
    "question",
    "answer",
    "comment",
    "correction",
    "training",
    "vote id",
]
_CLIP = 300


def _clip(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= _CLIP else text[: _CLIP - 1] + "…"


def vote_rows(votes: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per vote; 'training' says whether curation may use it."""
    return [
        [
            str(v["voted_at"])[:16].replace("T", " "),
            f"v{v['adapter_version']}",
            v["arm"],
            ", ".join(v.get("reasons") or ()),
            _clip(v["question"]),
            _clip(v["answer"]),
            _clip(v.get("comment")),
            _clip(v.get("correction")),
            "excluded" + (f": {v['excluded_because']}" if v.get("excluded_because") else "")
            if v["excluded"]
            else "used",
            v["vote_id"],
        ]
        for v in votes
    ]


def build_feedback_tab(operator: Operator) -> tuple[Any, list[Any]]:
    """The tab's components; returns its load function and outputs for the console."""
    import gradio as gr

    def query(rating: str, version: str, period: str, reason: str, words: str) -> tuple[Any, ...]:
        try:
            result = operator.feedback(
                rating=RATINGS.get(rating, "down"),
                version=None if version in ("", "all", None) else int(str(version).lstrip("v")),
                since_days=PERIODS.get(period),
                reason=None if reason in ("", "any", None) else reason,
                text=(words or "").strip() or None,
            )
        except (AssistantError, ValueError) as exc:
            raise gr.Error(str(exc)) from None
        versions = ["all"] + [f"v{n}" for n in result["versions"]]
        note = f"{len(result['votes'])} vote(s) shown, newest first."
        return vote_rows(result["votes"]), gr.update(choices=versions), note

    def pick(event: gr.SelectData) -> str:
        """The clicked row's vote id (its last column)."""
        row = getattr(event, "row_value", None)
        return str(row[HEADERS.index("vote id")]) if row and len(row) == len(HEADERS) else ""

    def change(excluded: bool) -> Any:
        def run(vote_id: str, why: str, *filters: str) -> tuple[Any, ...]:
            if not (vote_id or "").strip():
                raise gr.Error("Pick a vote first: click its row in the list.")
            try:
                message = operator.exclude_vote(
                    vote_id.strip(),
                    excluded=excluded,
                    actor=ACTOR,
                    reason=(why or "").strip() or None,
                )
            except AssistantError as exc:
                raise gr.Error(str(exc)) from None
            return (f"✅ {html.escape(message)}", *query(*filters))

        return run

    with gr.Row():
        rating = gr.Dropdown(list(RATINGS), value="👎 only", label="Votes", elem_id="fb-rating")
        version = gr.Dropdown(["all"], value="all", label="Version", elem_id="fb-version")
        period = gr.Dropdown(
            list(PERIODS), value="last 7 days", label="Period", elem_id="fb-period"
        )
        reason = gr.Dropdown(["any", *REASONS], value="any", label="Reason", elem_id="fb-reason")
        words = gr.Textbox(label="Words in comment or correction", elem_id="fb-words")
        apply = gr.Button("Show", elem_id="btn-fb-show")
    note = gr.Markdown(elem_id="fb-note")
    table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, elem_id="fb-votes")
    with gr.Row():
        vote = gr.Textbox(label="Vote (click a row)", elem_id="fb-vote", scale=2)
        why = gr.Textbox(label="Why (recorded in the audit log)", elem_id="fb-why", scale=3)
        exclude = gr.Button("Exclude from training", variant="stop", elem_id="btn-fb-exclude")
        include = gr.Button("Include again", elem_id="btn-fb-include")
    result = gr.Markdown(elem_id="fb-result")
    filters = [rating, version, period, reason, words]
    outputs = [table, version, note]
    apply.click(query, inputs=filters, outputs=outputs, api_visibility="private")
    table.select(pick, outputs=[vote], api_visibility="private")
    exclude.click(
        change(True),
        inputs=[vote, why, *filters],
        outputs=[result, *outputs],
        api_visibility="private",
    )
    include.click(
        change(False),
        inputs=[vote, why, *filters],
        outputs=[result, *outputs],
        api_visibility="private",
    )
    return (lambda: query("👎 only", "all", "last 7 days", "", "")), outputs
