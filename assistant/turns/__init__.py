"""One chat turn: canary routing, the turn service (ask, finish, rate) and the operator port."""
