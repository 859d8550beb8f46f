"""Whose votes may train the model and which texts may not: curation's vote-trust rule.

Identities are free (any cookieless request mints one), so training weight must be earned:
* a voter counts when logged in, or when their identity is old enough and has asked enough
  questions before the rated one (`voter_problem`);
* votes from one client network share one budget (applied by curation with the per-user caps);
* a correction with a link, contact details or an instruction to the reader, and a liked answer
  with a link or contact its sources did not give, is held for review (`text_problem`,
  `answer_problem`): phishing and prompt-injection payloads need exactly these;
* a phrase recurring in the corrections of many voters, and not the model's own wording, is a
  campaign (`campaign_phrases`): its voters stop counting in that dataset.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from config import CurationConfig
from core.domain import Vote
from training.dataset.pii import contains_pii

LOGIN_PREFIX = "user:"
"""User ids of logged-in accounts (assistant.http.identity names them `user:<name>`): accounts
are handed out by the operator, so they are not free."""

# Top-level domains a link is written with. Ones that are also file extensions or short words
# (py, md, sh, rs, it, in, is, to, me, no, us, at, be) only count after a scheme or "www.".
_TLDS = (
    "com|net|org|info|biz|io|co|ly|gl|gg|ai|app|dev|xyz|top|site|online|shop|store|club|"
    "live|link|click|ru|cn|tk|ml|ga|cf|gq|uk|de|fr|nl|eu|ca|au|br|jp|es|pl|ch|se|cc|tv|ws"
)
_LINK = re.compile(
    rf"(?i)\b(?:h(?:tt|xx)ps?://|www\.)\S+"
    rf"|\b[a-z0-9](?:[a-z0-9\-]{{0,61}}[a-z0-9])?(?:\.[a-z0-9\-]{{1,63}})*\.(?:{_TLDS})\b(?:/\S*)?"
    rf"|\b[a-z0-9\-]{{2,63}}\s*[\[(]?\s*(?:dot|\.)\s*[\])]?\s*(?:com|net|org|io|info|ru)\b"
)
_CONTACT = re.compile(
    r"(?i)\b(?:whats\s?app|telegram|signal me|wechat|viber|skype|dm me|message me|text me|"
    r"call me|contact (?:me|us|our (?:team|agent|support))|e-?mail (?:me|us))\b"
)
_INSTRUCTION = re.compile(
    r"(?i)\b(?:ignore (?:all |any |the )?(?:previous|prior|above|earlier|other) "
    r"(?:instructions|rules|prompts?)"
    r"|disregard (?:the|your|all) (?:instructions|rules|system prompt)"
    r"|system prompt|from now on|you are now|pretend (?:to be|you are)"
    r"|(?:always |you must |you should )?(?:tell|instruct|ask|advise|remind) (?:the |every |all )?"
    r"users? to"
    r"|(?:enter|type|confirm|send|share|give|provide) (?:me |us )?your (?:password|pin|card|"
    r"credit card|bank|account number|login|credentials|ssn|social security|seed phrase|otp|"
    r"one-time code|2fa|verification code)"
    r"|verify your (?:account|identity|password|card|payment)"
    r"|your account (?:is|has been|was) (?:locked|suspended|compromised|disabled)"
    r"|click (?:here|this link|the link|below))\b"
)


def text_problem(text: str) -> str | None:
    """Why a user-written text (a correction) must be held for review, or None: it carries a
    link, contact details, or an instruction to the reader or the model."""
    m = _LINK.search(text)
    if m:
        return f"a link ({m.group()[:60]!r})"
    if contains_pii(text, kinds={"email", "phone"}) or _CONTACT.search(text):
        return "contact details"
    m = _INSTRUCTION.search(text)
    if m:
        return f"an instruction to the reader ({m.group()[:60]!r})"
    return None


def answer_problem(answer: str, sources: Iterable[str]) -> str | None:
    """Why a liked model answer must be held, or None: it has a link or contact details that
    its retrieved sources did not give (the model was made to repeat a payload)."""
    given = " ".join(sources).casefold()
    for m in _LINK.finditer(answer):
        if m.group().casefold().rstrip(".,;:!?)") not in given:
            return f"a link its sources did not give ({m.group()[:60]!r})"
    if contains_pii(answer, kinds={"email", "phone"}) and not contains_pii(
        given, kinds={"email", "phone"}
    ):
        return "contact details its sources did not give"
    return None


def is_logged_in(user_id: str) -> bool:
    """Whether the voter is a logged-in account (not a free identity)."""
    return user_id.startswith(LOGIN_PREFIX)


def voter_problem(vote: Vote, cfg: CurationConfig) -> str | None:
    """Why the vote does not count toward a dataset, or None when its voter earned weight:
    logged in, or an identity at least `min_voter_age_hours` old with `min_voter_turns`
    earlier turns when it voted. Unknown history counts as none."""
    if is_logged_in(vote.user_id) or (cfg.min_voter_age_hours <= 0 and cfg.min_voter_turns <= 0):
        return None
    if vote.voter_since is None or vote.voter_turns_before is None:
        return "no history is known for the voter"
    hours = (vote.at - vote.voter_since).total_seconds() / 3600
    if hours < cfg.min_voter_age_hours:
        return (
            f"the identity was {hours:.1f} h old when it voted (min_voter_age_hours="
            f"{cfg.min_voter_age_hours:g})"
        )
    if vote.voter_turns_before < cfg.min_voter_turns:
        return (
            f"the identity had {vote.voter_turns_before} earlier turns (min_voter_turns="
            f"{cfg.min_voter_turns})"
        )
    return None


def ngrams(words: tuple[str, ...], n: int) -> set[tuple[str, ...]]:
    """The word n-grams of a text (its whole word tuple when shorter than n)."""
    if len(words) < n:
        return set()
    return {words[i : i + n] for i in range(len(words) - n + 1)}


def campaign_phrases(
    corrections: list[tuple[str, tuple[str, ...]]],
    model_words: Iterable[tuple[str, ...]],
    cfg: CurationConfig,
) -> set[tuple[str, ...]]:
    """Phrases of `campaign_phrase_words` words that recur in the corrections (voter, words) of
    at least `campaign_min_voters` distinct voters and `campaign_min_share` of the corrections,
    leaving out the model's own wording (`model_words`: answers users correct by editing)."""
    n = cfg.campaign_phrase_words
    own: set[tuple[str, ...]] = set()
    for words in model_words:
        own |= ngrams(words, n)
    voters: dict[tuple[str, ...], set[str]] = defaultdict(set)
    texts: dict[tuple[str, ...], int] = defaultdict(int)
    for voter, words in corrections:
        for gram in ngrams(words, n) - own:
            voters[gram].add(voter)
            texts[gram] += 1
    need = max(cfg.campaign_min_voters, cfg.campaign_min_share * len(corrections))
    return {
        g for g, who in voters.items() if len(who) >= cfg.campaign_min_voters and texts[g] >= need
    }


def campaign_span(words: tuple[str, ...], phrases: set[tuple[str, ...]], n: int) -> str | None:
    """The stretch of `words` covered by campaign phrases, for the operator ('' if none)."""
    hits = [i for i in range(len(words) - n + 1) if words[i : i + n] in phrases]
    if not hits:
        return None
    first = hits[0]
    last = first
    for i in hits[1:]:
        if i > last + n:
            break
        last = i
    return " ".join(words[first : last + n])
