"""Sticky canary split: which arm serves a new conversation, as a pure function of its id.

A conversation's place on the unit interval is a hash of the rollout id and the conversation id,
so it is uniform over conversations, fixed for the life of a rollout (sticky), and unrelated from
one rollout to the next (each rollout id salts the hash differently, so the same users are not the
guinea pigs of every canary). The conversation is a canary one when its place is below the
canary's weight, which makes the split monotone: raising the weight from 5% to 25% keeps every
conversation that was canary at 5% on the canary and only adds new ones.

Note for the caller: route only *new* conversations. Store the arm on the conversation at its
first turn and serve every later turn from that stored arm, so a production conversation is not
switched to the canary mid-conversation when the weight rises (nor back when it falls on a
rollback), and one conversation's ratings always describe one adapter. A paused rollout keeps
routing at its current weight; an ended rollout routes nothing (pass `None`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from core.domain import RoutedArm
from errors import InputError


@dataclass(frozen=True)
class RolloutRoute:
    """What routing needs to know of a running rollout: its id (the salt) and canary weight."""

    rollout_id: str
    weight: float

    def __post_init__(self) -> None:
        if not self.rollout_id:
            raise InputError("a rollout route needs a non-empty rollout_id (it salts the split)")
        if not 0.0 <= self.weight <= 1.0:
            raise InputError(f"canary weight {self.weight!r} must be a share between 0 and 1")


def bucket(rollout_id: str, conversation_id: str) -> float:
    """The conversation's fixed place in [0, 1) for this rollout.

    The rollout id is length-prefixed so that ("ab", "c") and ("a", "bc") never share a hash.
    Only the top 53 bits of the digest are used: that is all a float holds, and dividing a full
    64-bit integer by 2**64 could round up to exactly 1.0, which weight 1.0 would then miss.
    """
    salt = rollout_id.encode("utf-8")
    digest = hashlib.sha256(
        len(salt).to_bytes(4, "big") + salt + conversation_id.encode("utf-8")
    ).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def route(conversation_id: str, rollout: RolloutRoute | None) -> RoutedArm:
    """The arm that serves a new conversation: canary when its bucket lies below the weight.

    Comparing a fixed bucket with the weight is what makes a rising weight sticky (a canary
    conversation stays canary) and weight 0 / 1 send everything to production / the canary.
    """
    if rollout is None or rollout.weight <= 0.0:
        return "production"
    return (
        "canary" if bucket(rollout.rollout_id, conversation_id) < rollout.weight else "production"
    )
