"""The chat page's user features in a real browser (headless Chromium via Playwright): readable
sources, 👎 reasons, managing and exporting your own conversations, comparing a retry."""

from __future__ import annotations

import json

import pytest

from errors import NotFoundError
from store import logs, preferences
from tests.assistant import test_browser
from tests.assistant.test_browser import (
    ARTIFACTS,
    finished,
    open_chat,
    send,
    user_id_of,
)

pytestmark = pytest.mark.browser
browser = test_browser.browser  # the module's Chromium and the grounded server, shared
grounded = test_browser.grounded


def shot(page, name: str) -> None:  # noqa: ANN001
    """A full-page screenshot once the page is idle (no event still processing)."""
    page.wait_for_function("!document.body.innerText.includes('processing |')")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def listed(page, count: int) -> None:  # noqa: ANN001
    """Wait until the conversation list shows `count` entries (a screenshot if it never does)."""
    try:
        page.wait_for_function(
            f"document.querySelectorAll('#conversations label').length === {count}"
        )
    except Exception:
        shot(page, f"failed-conversation-list-{count}.png")
        raise


def test_sources_show_once_per_source_with_headings_and_excerpts_that_citations_open(
    browser, grounded
):
    context, page = open_chat(browser, grounded.url)
    try:
        send(page, "How do I rate an answer and add a correction?")
        answer = finished(page)
        user = user_id_of(context)
        services = grounded.services
        (conversation,) = logs.list_conversations(services.db, user)
        (turn,) = logs.conversation_turns(services.db, conversation.id, user)
        assert len(turn.passages) >= 3
        assert len({p.source for p in turn.passages}) < len(turn.passages)  # a source repeats
        text = answer.inner_text()
        for source in {p.source for p in turn.passages}:
            assert text.count(source) == 1, (source, text)  # each source named once
        excerpts = answer.locator("details.source")
        assert excerpts.count() == len(turn.passages)
        from assistant.retrieval.chunking import split_heading

        for i, passage in enumerate(turn.passages, start=1):
            heading, body = split_heading(passage.text)
            item = excerpts.nth(i - 1)
            summary = item.locator("summary").inner_text()
            assert summary.startswith(f"[{i}]")
            if heading:
                assert heading in summary
            excerpt = item.locator(".excerpt")
            assert not excerpt.is_visible()  # collapsed until asked for
        first = excerpts.first
        first.locator("summary").click()
        first_body = split_heading(turn.passages[0].text)[1]
        assert " ".join(first_body.split())[:60] in " ".join(
            first.locator(".excerpt").inner_text().split()
        )
        shot(page, "chat-sources-excerpt.png")
        first.locator("summary").click()  # close it again

        # The [n] markers in an answer link to the passages: a reopened answer that cites [2]
        # opens passage 2 when clicked. (The tiny test model does not cite by itself, so the
        # cited answer is written into the log as a model would have answered.)
        cited = f"Rate it with the buttons [2], then add a correction [1]. {turn.answer}"
        logs.log_turn(
            services.db,
            conversation_id=conversation.id,
            user_id=user,
            question=turn.question,
            answer=cited,
            messages=turn.messages,
            passages=turn.passages,
            adapter_version=turn.adapter_version,
            arm=turn.arm,
            prompt_tokens=turn.prompt_tokens,
            completion_tokens=turn.completion_tokens,
            latency_ms=turn.latency_ms,
            ttft_ms=turn.ttft_ms,
            finish_reason="stop",
            error=None,
        )
        page.reload()
        page.locator("#conversations").get_by_text(conversation.title).click()
        answer = finished(page)
        link = answer.locator("a.cite", has_text="[2]")
        link.wait_for()
        target = answer.locator("details.source").nth(1)
        assert target.get_attribute("open") is None
        link.click()
        target.locator(".excerpt").wait_for(state="visible")
        assert target.get_attribute("open") is not None
        shot(page, "chat-sources-citation-opened.png")
    finally:
        context.close()


def test_thumbs_down_offers_reasons_stored_with_the_vote(browser, live, services):
    context, page = open_chat(browser, live.url)
    try:
        send(page, "Tell me about canary releases.")
        finished(page)
        page.locator("#chat button[aria-label='Dislike']").last.click()
        reasons = page.locator("#reasons")
        reasons.wait_for()
        for label in (
            "Wrong",
            "Not helpful",
            "Too long",
            "Didn't follow instructions",
            "Unsafe",
            "Other",
        ):
            assert reasons.get_by_label(label).count() == 1, label
        reasons.get_by_label("Too long").check()
        reasons.get_by_label("Didn't follow instructions").check()
        page.locator("#comment textarea").fill("Rambles on.")
        page.locator("#correction textarea").fill("A canary gets a small share first.")
        shot(page, "chat-feedback-reasons.png")
        page.locator("#send-feedback").click()
        page.locator("text=your feedback was saved").wait_for()
        user = user_id_of(context)
        (conversation,) = logs.list_conversations(services.db, user)
        (turn,) = logs.conversation_turns(services.db, conversation.id, user)
        assert [(v.rating, v.comment, v.correction, v.reasons) for v in turn.votes] == [
            (
                "down",
                "Rambles on.",
                "A canary gets a small share first.",
                ("too_long", "ignored_instructions"),
            )
        ]
        # A thumbs up asks for no reasons.
        page.locator("#chat button[aria-label='Like']").last.click()
        page.locator("#comment textarea").wait_for()
        assert not page.locator("#reasons").is_visible()
    finally:
        context.close()


def test_search_rename_delete_and_download_your_own_conversations(browser, live, services):
    alice, page = open_chat(browser, live.url)
    bob, page_b = open_chat(browser, live.url)
    try:
        send(page_b, "Bob's private tulip question")
        finished(page_b)
        for question in ("Where do tulips grow?", "What is DuckDB?", "Roses or tulips?"):
            page.locator("#new-conversation").click()
            # A person types once the chat has emptied (the new conversation is open).
            page.wait_for_function(
                "document.querySelectorAll('#chat [data-testid=\"bot\"]').length === 0"
            )
            send(page, question)
            finished(page)
            page.locator("#conversations").get_by_text(question).wait_for()
        listed(page, 3)

        page.locator(
            "#conversation-search textarea, #conversation-search input"
        ).first.press_sequentially("TULIP")  # typed, as a person does: the list follows
        listed(page, 2)
        names = page.locator("#conversations").inner_text()
        assert "Where do tulips grow?" in names and "Roses or tulips?" in names
        assert "DuckDB" not in names and "Bob" not in names
        shot(page, "chat-conversations-search.png")

        page.locator("#conversations").get_by_text("Roses or tulips?").click()
        page.locator("#chat [data-testid='user']").get_by_text("Roses or tulips?").wait_for()
        page.locator("#manage").get_by_text("This conversation").click()
        page.locator("#rename-title textarea, #rename-title input").first.fill("Flower notes")
        page.locator("#rename").click()
        page.locator("#conversations").get_by_text("Flower notes").wait_for()
        user = user_id_of(alice)
        assert sorted(c.title for c in logs.list_conversations(services.db, user)) == [
            "Flower notes",
            "What is DuckDB?",
            "Where do tulips grow?",
        ]

        page.locator("#delete-conversation").click()
        page.locator("#confirm-delete").get_by_text("Flower notes").wait_for()
        shot(page, "chat-conversation-delete-confirm.png")
        page.locator("#delete-yes").click()
        page.get_by_text("Deleted the conversation").wait_for()
        listed(page, 1)
        assert "Flower notes" not in page.locator("#conversations").inner_text()
        assert sorted(c.title for c in logs.list_conversations(services.db, user)) == [
            "What is DuckDB?",
            "Where do tulips grow?",
        ]
        shot(page, "chat-conversation-deleted.png")

        page.locator("#your-data").get_by_text("Your data").click()
        with page.expect_download() as info:
            page.locator("#download-data").click()
        download = info.value
        assert download.suggested_filename == "my-assistant-data.json"
        data = json.loads(open(download.path(), encoding="utf-8").read())
        assert data["user_id"] == user
        questions = sorted(t["question"] for c in data["conversations"] for t in c["turns"])
        assert questions == ["What is DuckDB?", "Where do tulips grow?"]
        assert "Bob" not in json.dumps(data)
        shot(page, "chat-data-downloaded.png")

        # Bob's conversations are untouched and cannot be reached from Alice's identity.
        b_user = user_id_of(bob)
        (b_conv,) = logs.list_conversations(services.db, b_user)
        with pytest.raises(NotFoundError):
            logs.rename_conversation(services.db, b_conv.id, user, "stolen")

        page.locator("#forget-me").click()
        page.locator("#forget-yes").click()
        page.get_by_text("Deleted all your data").wait_for()
        assert logs.list_conversations(services.db, user) == []
        listed(page, 0)
        shot(page, "chat-data-deleted.png")
        assert [c.title for c in logs.list_conversations(services.db, b_user)] == [
            "Bob's private tulip question"
        ]
    finally:
        alice.close()
        bob.close()


def test_after_a_retry_the_user_marks_the_better_answer(browser, live, services):
    context, page = open_chat(browser, live.url)
    try:
        send(page, "Name a colour.")
        finished(page)
        assert not page.locator("#compare").is_visible()
        page.locator("#chat button[aria-label='Retry']").last.click()
        page.locator("#compare").get_by_text("Which answer was better?").wait_for()
        finished(page)
        shot(page, "chat-retry-compare.png")
        page.locator("#prefer-retry").click()
        page.locator("#compare").get_by_text("You marked the new answer as better").wait_for()
        user = user_id_of(context)
        (conversation,) = logs.list_conversations(services.db, user)
        first, again = logs.conversation_turns(services.db, conversation.id, user)
        (pair,) = [p for p in preferences.preference_pairs(services.db) if p.user_id == user]
        assert (pair.chosen_turn_id, pair.rejected_turn_id) == (again.id, first.id)
        assert (pair.chosen, pair.rejected) == (again.answer, first.answer)
        shot(page, "chat-retry-preferred.png")
        # A new question ends the comparison.
        send(page, "And another?")
        finished(page)
        page.locator("#compare").wait_for(state="hidden")
    finally:
        context.close()
