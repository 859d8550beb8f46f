"""Serving pipeline, one subpackage per step of a turn:
http (edge: routes, identity, limits) -> turns (route, ask, finish, rate) -> retrieval (documents)
-> generation (the model worker) -> store (log); pages are the browser and terminal views."""
