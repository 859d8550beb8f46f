"""How an answer is shown: its [n] citations linked to its sources, each source once with its
passages (heading and an expandable excerpt of the text the model saw), and its notes.

Everything from users, models and documents is escaped here; Gradio's sanitizer is the second
line of defence, not the first. The markup is plain HTML the chatbot keeps (`details`,
`summary`, `a href="#..."`, `id`), one line per element so Markdown never re-reads an excerpt.
"""

from __future__ import annotations

import html
import re

from assistant.retrieval.chunking import split_heading
from core.domain import ServedPassage

NO_SOURCES = "_No sources: this answer did not use your documents._"
SUMMARY_CHARS = 80
"""A passage without a heading is named by its first characters, at most this many."""
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>$])")
_CITATION = re.compile(r"\[(\d{1,3})\]")
_SAFE_ID = re.compile(r"[^A-Za-z0-9-]")

OPEN_CITED_SOURCE_JS = """
() => {
  if (window.__citationLinks) return;
  window.__citationLinks = true;
  document.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("a[href^='#src-']");
    if (!link) return;
    const target = document.getElementById(link.getAttribute("href").slice(1));
    if (!target) return;
    event.preventDefault();
    target.open = true;
    target.scrollIntoView({block: "nearest"});
    target.classList.add("cited");
    setTimeout(() => target.classList.remove("cited"), 1500);
  });
}
"""
"""Page script: a click on an [n] citation opens that passage's excerpt and scrolls to it."""

CSS = """
details.source { margin: .15em 0 .15em 1em }
details.source summary { cursor: pointer }
details.source .excerpt { font-size: .9em; opacity: .9; border-left: 3px solid #8884;
                          padding: .2em .6em; margin: .3em 0 }
details.cited summary { background: #ffd54f66 }
a.cite { text-decoration: none; font-weight: 600 }
"""


def md_text(text: str) -> str:
    """Text shown verbatim inside rendered Markdown: HTML escaped, Markdown syntax escaped."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(" ".join(text.split())))


def shown_question(question: str) -> str:
    """A user's message as displayed: HTML tags show as typed, never as markup."""
    return html.escape(question)


def anchor(turn_id: str, n: int) -> str:
    """The element id of passage `n` of an answer (unique on the page: one per turn)."""
    return f"src-{_SAFE_ID.sub('', turn_id)[:40]}-{n}"


def link_citations(answer: str, passages: int, turn_id: str) -> str:
    """The answer with each [n] that names one of its `passages` linked to that passage."""
    if not passages:
        return answer

    def link(match: re.Match[str]) -> str:
        n = int(match.group(1))
        if not 1 <= n <= passages:
            return match.group(0)
        return f'<a class="cite" href="#{anchor(turn_id, n)}">[{n}]</a>'

    return _CITATION.sub(link, answer)


def _summary(n: int, passage: ServedPassage) -> tuple[str, str]:
    heading, body = split_heading(passage.text)
    if not heading:
        flat = " ".join(body.split())
        heading = flat if len(flat) <= SUMMARY_CHARS else flat[: SUMMARY_CHARS - 1] + "…"
    return f"[{n}] {heading}", body


def sources_block(passages: list[ServedPassage], turn_id: str) -> str:
    """Each source once (in order of its first passage) with its passages under it; each
    passage a collapsed excerpt titled by its number and heading."""
    groups: dict[str, list[tuple[int, ServedPassage]]] = {}
    for n, passage in enumerate(passages, start=1):
        groups.setdefault(passage.source, []).append((n, passage))
    lines = ["**Sources**"]
    for source, items in groups.items():
        numbers = " ".join(f"\\[{n}\\]" for n, _ in items)
        lines.append(f"{numbers} **{md_text(source)}**")
        for n, passage in items:
            title, body = _summary(n, passage)
            excerpt = "<br>".join(
                html.escape(" ".join(p.split())) for p in body.split("\n\n") if p.strip()
            )
            lines.append(
                f'<details class="source" id="{anchor(turn_id, n)}"><summary>'
                f'{html.escape(title)}</summary><div class="excerpt">{excerpt}'
                "</div></details>"
            )
    return "\n\n".join(lines)


def answer_footer(passages: list[ServedPassage], notes: list[str], turn_id: str = "") -> str:
    """The sources an answer used, numbered like its [n] citations, and its notes."""
    lines = [sources_block(passages, turn_id) if passages else NO_SOURCES]
    lines += [f"_{md_text(note)}_" for note in notes]
    return "\n\n---\n" + "\n\n".join(lines)


def shown_answer(answer: str, passages: list[ServedPassage], notes: list[str], turn_id: str) -> str:
    """A finished answer as the chat shows it: linked citations, then sources and notes."""
    return link_citations(answer, len(passages), turn_id) + answer_footer(passages, notes, turn_id)


def turn_notes(
    retrieval_note: str | None,
    dropped_turns: int,
    stopped: bool = False,
    error: str | None = None,
    empty: bool = False,
) -> list[str]:
    """The notes shown under an answer: why it is empty or cut short, what it lacked."""
    notes = []
    if empty and not stopped and not error:
        notes.append("The model gave no answer to this message: retry or rephrase it.")
    if stopped:
        notes.append("Stopped: the answer was cut short on your request.")
    if error:
        notes.append("The answer could not be finished because of a server error; try again.")
    if retrieval_note:
        notes.append(retrieval_note)
    if dropped_turns:
        notes.append(
            f"{dropped_turns} earlier turn(s) of this conversation were left out of "
            "the model's prompt to fit its context window (they stay in your "
            "conversation)."
        )
    return notes
