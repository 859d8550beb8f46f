"""Conversation logs: conversations and every served turn (the votes on them: store/ratings.py).

Ownership is part of every query: a conversation or turn of another user reads exactly like
one that does not exist (same NotFoundError message), so ids cannot be probed.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, get_args

from core.domain import Arm, Conversation, FeedbackReason, Rating, ServedPassage, Turn, Vote
from errors import InputError, NotFoundError
from store.columns import (
    MAX_ID_CHARS,
    MAX_MESSAGES,
    MAX_NOTE_CHARS,
    MAX_TEXT_CHARS,
    MAX_TITLE_CHARS,
    aware,
    check_choice,
    check_id,
    check_int,
    check_number,
    check_text,
    from_json,
    now,
    to_db,
    to_json,
)
from store.db import Cursor, Database, one_row

ARMS: tuple[str, ...] = get_args(Arm)
RATINGS: tuple[str, ...] = get_args(Rating)
REASONS: tuple[str, ...] = get_args(FeedbackReason)


def _conversation_missing(conversation_id: str) -> NotFoundError:
    return NotFoundError(
        f"conversation {conversation_id!r} was not found for this user: start "
        "a new conversation or pick one from your list"
    )


def turn_missing(turn_id: str) -> NotFoundError:
    return NotFoundError(
        f"answer {turn_id!r} was not found for this user: only the person an "
        "answer was given to can rate it; reload the conversation"
    )


# ---- conversations ---------------------------------------------------------------------------


def create_conversation(
    db: Database,
    user_id: str,
    title: str | None = None,
    arm: str | None = None,
    adapter_version: int | None = None,
    rollout_id: str | None = None,
    conversation_id: str | None = None,
) -> str:
    """Start a conversation for `user_id`, remembering the arm/adapter it is routed to (the sticky
    canary assignment); returns its id (a uuid4 string, or `conversation_id` when the caller
    drew it first, e.g. to route the conversation by its id before creating it)."""
    user_id = check_id("user_id", user_id)
    title = check_text("title", title, MAX_TITLE_CHARS, optional=True)
    if arm is not None:
        check_choice("arm", arm, ARMS)
    check_int("adapter_version", adapter_version, optional=True)
    rollout_id = check_text("rollout_id", rollout_id, MAX_ID_CHARS, optional=True)
    conversation_id = check_id("conversation_id", conversation_id or str(uuid.uuid4()))
    params = [conversation_id, user_id, title, arm, adapter_version, rollout_id, to_db(now())]
    db.write(
        lambda cur: cur.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?, ?)", params)
    )
    return conversation_id


_CONVERSATION_SELECT = """
    SELECT c.id, c.user_id, c.title, c.arm, c.adapter_version, c.rollout_id, c.created_at,
           coalesce(max(t.created_at), c.created_at) AS last_activity, count(t.id)
    FROM conversations c LEFT JOIN turns t ON t.conversation_id = c.id
    WHERE c.user_id = ? {extra}
    GROUP BY c.id, c.user_id, c.title, c.arm, c.adapter_version, c.rollout_id, c.created_at"""


def _conversation(row: Sequence[Any]) -> Conversation:
    return Conversation(
        id=row[0],
        user_id=row[1],
        title=row[2],
        arm=row[3],
        adapter_version=row[4],
        rollout_id=row[5],
        created_at=aware(row[6]),
        last_activity=aware(row[7]),
        turn_count=row[8],
    )


def get_conversation(db: Database, conversation_id: str, user_id: str) -> Conversation:
    """The user's conversation; NotFoundError if it does not exist or belongs to someone else."""
    with db.reader() as cur:
        row = cur.execute(
            _CONVERSATION_SELECT.format(extra="AND c.id = ?"), [user_id, conversation_id]
        ).fetchone()
    if row is None:
        raise _conversation_missing(conversation_id)
    return _conversation(row)


def list_conversations(db: Database, user_id: str, limit: int = 50) -> list[Conversation]:
    """The user's conversations, most recently active first, with title and turn count."""
    check_int("limit", limit, minimum=1)
    with db.reader() as cur:
        rows = cur.execute(
            _CONVERSATION_SELECT.format(extra="") + " ORDER BY last_activity DESC, c.id LIMIT ?",
            [user_id, limit],
        ).fetchall()
    return [_conversation(r) for r in rows]


def rename_conversation(db: Database, conversation_id: str, user_id: str, title: str) -> None:
    """Set the title of the user's conversation (NotFoundError when it is not theirs)."""
    title = check_text("title", title, MAX_TITLE_CHARS) or ""

    def run(cur: Cursor) -> None:
        found = cur.execute(
            "SELECT 1 FROM conversations WHERE id = ? AND user_id = ?", [conversation_id, user_id]
        ).fetchone()
        if found is None:
            raise _conversation_missing(conversation_id)
        cur.execute("UPDATE conversations SET title = ? WHERE id = ?", [title, conversation_id])

    db.write(run)


# ---- turns -----------------------------------------------------------------------------------


def _check_messages(messages: object) -> list[dict[str, str]]:
    if not isinstance(messages, list) or len(messages) > MAX_MESSAGES:
        raise InputError(f"messages must be a list of at most {MAX_MESSAGES} chat messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InputError(f"messages[{i}] must be a dict with 'role' and 'content' strings")
        for key, value in message.items():
            check_text(f"messages[{i}].{key}", value, MAX_TEXT_CHARS)
    return messages


def _check_passages(passages: object) -> list[dict[str, Any]]:
    if not isinstance(passages, list) or len(passages) > MAX_MESSAGES:
        raise InputError(f"passages must be a list of at most {MAX_MESSAGES} ServedPassage")
    out = []
    for i, p in enumerate(passages):
        if not isinstance(p, ServedPassage):
            raise InputError(f"passages[{i}] must be a ServedPassage, not {type(p).__name__}")
        out.append(
            {
                "chunk_id": check_text(f"passages[{i}].chunk_id", p.chunk_id, MAX_ID_CHARS),
                "source": check_text(f"passages[{i}].source", p.source, MAX_NOTE_CHARS),
                "text": check_text(f"passages[{i}].text", p.text, MAX_TEXT_CHARS),
                "score": float(p.score),
            }
        )
    return out


def log_turn(
    db: Database,
    *,
    conversation_id: str,
    user_id: str,
    question: str,
    answer: str,
    messages: list[dict[str, str]],
    passages: list[ServedPassage],
    adapter_version: int,
    arm: str,
    prompt_tokens: int,
    completion_tokens: int,
    latency_ms: float,
    ttft_ms: float | None,
    finish_reason: str,
    error: str | None,
    retrieval_note: str | None = None,
    rollout_id: str | None = None,
    turn_id: str | None = None,
) -> str:
    """Log one served answer in the user's conversation and return the turn id once committed.

    `messages` are the exact chat messages given to the model; passages keep chunk id, source,
    text and score. The turn inherits the conversation's rollout id unless `rollout_id` is
    given. Texts over MAX_TEXT_CHARS are refused (InputError), never truncated. `turn_id` lets
    the caller name the turn before it is logged (a streamed answer shows its id up front).
    """
    question = check_text("question", question, MAX_TEXT_CHARS) or ""
    answer = check_text("answer", answer, MAX_TEXT_CHARS) or ""
    messages_json = to_json("messages", _check_messages(messages))
    passages_json = to_json("passages", _check_passages(passages))
    check_int("adapter_version", adapter_version)
    check_choice("arm", arm, ARMS)
    check_int("prompt_tokens", prompt_tokens)
    check_int("completion_tokens", completion_tokens)
    params = [
        check_id("turn_id", turn_id or str(uuid.uuid4())),
        question,
        answer,
        messages_json,
        passages_json,
        adapter_version,
        arm,
        check_text("rollout_id", rollout_id, MAX_ID_CHARS, optional=True),
        prompt_tokens,
        completion_tokens,
        check_number("latency_ms", latency_ms),
        check_number("ttft_ms", ttft_ms, optional=True),
        check_text("finish_reason", finish_reason, MAX_ID_CHARS),
        check_text("error", error, MAX_NOTE_CHARS, optional=True),
        check_text("retrieval_note", retrieval_note, MAX_NOTE_CHARS, optional=True),
        to_db(now()),
        conversation_id,
        user_id,
    ]

    def run(cur: Cursor) -> str:
        # Insert through the owner check so a turn can only land in the user's own conversation.
        (inserted,) = one_row(
            cur.execute(
                "INSERT INTO turns SELECT ?1, c.id, c.user_id, ?2, ?3, ?4, ?5, ?6, ?7, "
                "coalesce(?8, c.rollout_id), ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16 "
                "FROM conversations c WHERE c.id = ?17 AND c.user_id = ?18",
                params,
            )
        )
        if not inserted:
            raise _conversation_missing(conversation_id)
        return str(params[0])

    return db.write(run)


PENDING = "pending"
"""finish_reason of a turn whose question is logged and whose answer is still being written."""
UNFINISHED_ERROR = (
    "the server stopped before the answer was finished; the question was kept: ask again"
)


def begin_turn(
    db: Database,
    *,
    conversation_id: str,
    user_id: str,
    question: str,
    messages: list[dict[str, str]],
    passages: list[ServedPassage],
    adapter_version: int,
    arm: str,
    rollout_id: str | None = None,
    retrieval_note: str | None = None,
    turn_id: str | None = None,
    new_conversation: dict[str, Any] | None = None,
) -> str:
    """Log the question of a turn as it arrives (finish_reason 'pending', empty answer) and
    return its id; `complete_turn` writes the answer. With `new_conversation`
    (create_conversation's keyword arguments) the conversation is created in the same
    transaction, so a turn that cannot be logged leaves no empty conversation behind."""
    question = check_text("question", question, MAX_TEXT_CHARS) or ""
    messages_json = to_json("messages", _check_messages(messages))
    passages_json = to_json("passages", _check_passages(passages))
    check_int("adapter_version", adapter_version)
    check_choice("arm", arm, ARMS)
    conversation_id = check_id("conversation_id", conversation_id)
    user_id = check_id("user_id", user_id)
    turn_id = check_id("turn_id", turn_id or str(uuid.uuid4()))
    at = to_db(now())
    create: list[Any] | None = None
    if new_conversation is not None:
        spec = dict(new_conversation)
        conv_arm = spec.get("arm")
        if conv_arm is not None:
            check_choice("arm", conv_arm, ARMS)
        check_int("adapter_version", spec.get("adapter_version"), optional=True)
        create = [
            conversation_id,
            user_id,
            check_text("title", spec.get("title"), MAX_TITLE_CHARS, optional=True),
            conv_arm,
            spec.get("adapter_version"),
            check_text("rollout_id", spec.get("rollout_id"), MAX_ID_CHARS, optional=True),
            at,
        ]
    params = [
        turn_id,
        question,
        messages_json,
        passages_json,
        adapter_version,
        arm,
        check_text("rollout_id", rollout_id, MAX_ID_CHARS, optional=True),
        PENDING,
        check_text("retrieval_note", retrieval_note, MAX_NOTE_CHARS, optional=True),
        at,
        conversation_id,
        user_id,
    ]

    def run(cur: Cursor) -> str:
        if create is not None:
            cur.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?, ?)", create)
        (inserted,) = one_row(
            cur.execute(
                "INSERT INTO turns SELECT ?1, c.id, c.user_id, ?2, '', ?3, ?4, ?5, ?6, "
                "coalesce(?7, c.rollout_id), 0, 0, 0, NULL, ?8, NULL, ?9, ?10 "
                "FROM conversations c WHERE c.id = ?11 AND c.user_id = ?12",
                params,
            )
        )
        if not inserted:
            raise _conversation_missing(conversation_id)
        return turn_id

    return db.write(run)


def complete_turn(
    db: Database,
    *,
    turn_id: str,
    user_id: str,
    answer: str,
    prompt_tokens: int,
    completion_tokens: int,
    latency_ms: float,
    ttft_ms: float | None,
    finish_reason: str,
    error: str | None,
) -> str:
    """Write the answer of a turn `begin_turn` logged (once: a finished turn is not changed)."""
    params = [
        check_text("answer", answer, MAX_TEXT_CHARS) or "",
        check_int("prompt_tokens", prompt_tokens),
        check_int("completion_tokens", completion_tokens),
        check_number("latency_ms", latency_ms),
        check_number("ttft_ms", ttft_ms, optional=True),
        check_text("finish_reason", finish_reason, MAX_ID_CHARS),
        check_text("error", error, MAX_NOTE_CHARS, optional=True),
        turn_id,
        user_id,
        PENDING,
    ]

    def run(cur: Cursor) -> str:
        (updated,) = one_row(
            cur.execute(
                "UPDATE turns SET answer = ?, prompt_tokens = ?, completion_tokens = ?, "
                "latency_ms = ?, ttft_ms = ?, finish_reason = ?, error = ? "
                "WHERE id = ? AND user_id = ? AND finish_reason = ?",
                params,
            )
        )
        if not updated:
            raise turn_missing(turn_id)
        return turn_id

    return db.write(run)


def close_unfinished_turns(db: Database, error: str = UNFINISHED_ERROR) -> int:
    """Mark every turn still pending (its process stopped mid-answer) as failed, keeping its
    question and whatever is known; returns how many. Run at start, before serving."""

    def run(cur: Cursor) -> int:
        (n,) = one_row(
            cur.execute(
                "UPDATE turns SET finish_reason = 'error', error = ? WHERE finish_reason = ?",
                [error, PENDING],
            )
        )
        return int(n)

    return db.write(run)


def is_pending(db: Database, turn_id: str, user_id: str) -> bool:
    """Whether the user's turn is still being answered."""
    with db.reader() as cur:
        row = cur.execute(
            "SELECT finish_reason = ? FROM turns WHERE id = ? AND user_id = ?",
            [PENDING, turn_id, user_id],
        ).fetchone()
    return bool(row and row[0])


def passages_from_json(text: str) -> list[ServedPassage]:
    """Stored passages JSON back to records."""
    return [ServedPassage(**p) for p in from_json(text, [])]


def vote_from_row(row: Sequence[Any]) -> Vote:
    """(user_id, rating, comment, correction, updated_at[, reasons JSON]) -> Vote."""
    reasons = tuple(from_json(row[5], []) or ()) if len(row) > 5 else ()
    return Vote(
        user_id=row[0],
        rating=row[1],
        comment=row[2],
        correction=row[3],
        at=aware(row[4]),
        reasons=reasons,
    )


def conversation_turns(db: Database, conversation_id: str, user_id: str) -> list[Turn]:
    """The turns of the user's conversation, oldest first, each with its current votes."""
    with db.reader() as cur:
        if (
            cur.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND user_id = ?",
                [conversation_id, user_id],
            ).fetchone()
            is None
        ):
            raise _conversation_missing(conversation_id)
        rows = cur.execute(
            "SELECT id, conversation_id, user_id, question, answer, messages, passages, "
            "adapter_version, arm, rollout_id, prompt_tokens, completion_tokens, latency_ms, "
            "ttft_ms, finish_reason, error, retrieval_note, created_at FROM turns "
            "WHERE conversation_id = ? AND user_id = ? ORDER BY created_at, id",
            [conversation_id, user_id],
        ).fetchall()
        votes: dict[str, list[Vote]] = defaultdict(list)
        for v in cur.execute(
            "SELECT f.turn_id, f.user_id, f.rating, f.comment, f.correction, f.updated_at, "
            "f.reasons FROM feedback f JOIN turns t ON t.id = f.turn_id "
            "WHERE t.conversation_id = ? ORDER BY f.updated_at",
            [conversation_id],
        ).fetchall():
            votes[v[0]].append(vote_from_row(v[1:]))
    return [
        Turn(
            id=r[0],
            conversation_id=r[1],
            user_id=r[2],
            question=r[3],
            answer=r[4],
            messages=from_json(r[5], []),
            passages=passages_from_json(r[6]),
            adapter_version=r[7],
            arm=r[8],
            rollout_id=r[9],
            prompt_tokens=r[10],
            completion_tokens=r[11],
            latency_ms=r[12],
            ttft_ms=r[13],
            finish_reason=r[14],
            error=r[15],
            retrieval_note=r[16],
            created_at=aware(r[17]),
            votes=votes.get(r[0], []),
        )
        for r in rows
    ]


# ---- the user's own conversations: search ------------------------------------------------------

MAX_SEARCH_CHARS = 200


def search_conversations(
    db: Database, user_id: str, query: str, limit: int = 50
) -> list[Conversation]:
    """The user's conversations whose title, questions or answers contain `query` (case
    insensitive, taken literally: % and _ match themselves), most recently active first.
    An empty query lists them all."""
    query = (check_text("search", query, MAX_SEARCH_CHARS) or "").strip()
    if not query:
        return list_conversations(db, user_id, limit)
    check_int("limit", limit, minimum=1)
    pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    extra = (
        "AND (c.title ILIKE ?2 ESCAPE '\\' OR EXISTS (SELECT 1 FROM turns s "
        "WHERE s.conversation_id = c.id AND s.user_id = c.user_id AND "
        "(s.question ILIKE ?2 ESCAPE '\\' OR s.answer ILIKE ?2 ESCAPE '\\')))"
    )
    sql = (
        _CONVERSATION_SELECT.replace("c.user_id = ?", "c.user_id = ?1").format(extra=extra)
        + " ORDER BY last_activity DESC, c.id LIMIT ?3"
    )
    with db.reader() as cur:
        rows = cur.execute(sql, [user_id, pattern, limit]).fetchall()
    return [_conversation(r) for r in rows]
