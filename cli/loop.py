"""Subcommands of the learning loop: curate, cycle, rollout status|pause|resume|promote|abort.

They open the database themselves when the server is not running. While it runs (it holds the
only writer), `cycle` and `rollout` go through its authenticated admin API when the admin token
is set in the environment, and otherwise stop with a message saying so.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

from cli import command
from config import Config
from errors import StoreError, TransitionError
from store.db import Database, database_path, open_database


def _open(cfg: Config) -> Database:
    return open_database(database_path(cfg))


def _admin(
    cfg: Config, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Call the running server's admin API with the token from the environment."""
    token = cfg.secret(cfg.server.admin_token_env)
    if not token:
        raise StoreError(
            f"the server holds the database and {cfg.server.admin_token_env} is "
            "not set: set it to the server's admin token to act through its admin "
            "API, or stop the server"
        )
    host = "127.0.0.1" if cfg.server.host in ("0.0.0.0", "::") else cfg.server.host
    request = urllib.request.Request(
        f"http://{host}:{cfg.server.port}/admin{path}",
        method=method,
        data=json.dumps(body or {}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("detail", exc.reason)
        if exc.code == 409:
            raise TransitionError(str(detail)) from None
        raise StoreError(f"the server's admin API refused: {detail}") from None
    except urllib.error.URLError as exc:
        raise StoreError(
            f"the database is held by another process but no server answers at "
            f"{request.full_url} ({exc.reason})"
        ) from None


# ---- curate ----------------------------------------------------------------------------------


def _curate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would be kept and dropped without writing a dataset",
    )


@command("curate", "build a dataset from the rated answers since the last dataset", _curate_args)
def cmd_curate(cfg: Config, args: argparse.Namespace) -> int:
    from training.dataset.build import curate_since_last, save_dataset
    from training.dataset.curate import summary_lines

    with _open(cfg) as db:
        curated = curate_since_last(cfg, db)
        result = curated.result
        for line in summary_lines(result):
            print(line)
        if args.dry_run or not result.examples:
            print("no dataset written" + (" (dry run)" if args.dry_run else ""))
            return 0
        saved = save_dataset(cfg, db, curated, source={"command": "curate"}, actor="cli")
        print(f"dataset {saved.dataset_id} written to {saved.folder}")
    return 0


# ---- cycle -----------------------------------------------------------------------------------


def _cycle_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force",
        action="store_true",
        help="run even with fewer new ratings than schedule.min_new_examples",
    )


@command(
    "cycle", "run one improvement cycle now: curate, train, validate, start a canary", _cycle_args
)
def cmd_cycle(cfg: Config, args: argparse.Namespace) -> int:
    from training.loop.cycle import run_cycle

    try:
        db = _open(cfg)
    except StoreError:
        print(_admin(cfg, "POST", "/actions/cycle")["result"])
        return 0
    with db:
        result = run_cycle(cfg, db, trigger="manual", actor="cli", force=args.force)
    for line in result.curation_summary:
        print(line)
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in result.stage_seconds.items())
    print(f"cycle {result.status}: {result.reason}" + (f" ({timings})" if timings else ""))
    return 1 if result.status == "failed" else 0


# ---- rollout ---------------------------------------------------------------------------------


def _rollout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["status", "pause", "resume", "promote", "abort"])
    p.add_argument("--reason", help="why (recorded in the audit log)")


def _print_status(overview: dict[str, Any]) -> None:
    active = overview.get("active_rollout")
    print(
        f"production: v{overview['production_version']}"
        f"{' (the bare base model)' if not overview['production_version'] else ''}"
    )
    if not active:
        print("no canary rollout is running")
        return
    r, d = active["rollout"], active["decision"]
    s = d["statistics"]
    print(
        f"canary v{r['adapter_version']}: {r['status']}, step {r['step_index'] + 1} of "
        f"{len(r['steps'])} ({100 * r['steps'][r['step_index']]:g}% of new conversations)"
    )
    print(
        f"  👍 canary {s.get('canary_up')}/{s.get('canary_ratings')}, production "
        f"{s.get('production_up')}/{s.get('production_ratings')}; "
        f"P(not worse by > margin) = {s.get('p_non_inferior', 0):.3f}"
    )
    print(f"  rule says: {d['action']} - {d['reason']}")


@command("rollout", "show or steer the canary rollout", _rollout_args)
def cmd_rollout(cfg: Config, args: argparse.Namespace) -> int:
    action = {"abort": "rollback"}.get(args.action, args.action)
    try:
        db = _open(cfg)
    except StoreError:
        if action == "status":
            _print_status(_admin(cfg, "GET", "/overview"))
        else:
            print(_admin(cfg, "POST", f"/actions/{action}", {"reason": args.reason})["result"])
        return 0
    from training.loop.operator import LoopOperator
    from training.loop.schedule import LoopScheduler

    with db:
        operator = LoopOperator(cfg, db, LoopScheduler(cfg, db))
        if action == "status":
            _print_status(operator.overview())
        else:
            print(operator.act(action, actor="cli", reason=args.reason))
    return 0
