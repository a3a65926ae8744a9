"""The CLI's commands about a running deployment: `status`, `dead-letters`, `redeliver`,
`stop`; `journal reshard`, which must find the deployment stopped; and `serve-env`,
the Serve settings to start Ray with.

They plug into `ghbot`'s command line through the `ghbot.cli` entry point (see
`ghbot.cli`). Ray is imported only when one of them runs, so loading them (every
`ghbot` command does) costs no Ray import. They connect through
`actors.ray.connection`, which sends Ray's authentication token to a cluster on this
machine without being told (`serve run` starts one with token authentication on), and
says what to do when a cluster refuses them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from actors.ray.connection import ClusterError, connected
from ghbot.cli import Command, positive_seconds, register
from ghbot.digits import whole_number

#: Nothing to import: the commands plug in through `register`.
__all__: list[str] = []


# --- operating a running deployment: ghbot status, ghbot dead-letters --------------------
#
# These connect to the Ray cluster as a driver (`connected`), find the deployment's
# shard actors by name in its namespace (`actors.ray.admin`), and disconnect. Ray is
# imported inside them, so `import ghbot.cli` (and `ghbot fake-github`) never imports
# Ray. When the caller has connected already (`ray.is_initialized()`: a test, a
# notebook), they use that connection and leave it open.


def _cluster_arguments(parser: argparse.ArgumentParser, *, json_instead_of: str = "") -> None:
    """Add --address and --namespace; and --json when the command prints `json_instead_of`."""
    add = parser.add_argument
    add(
        "--address",
        help="the Ray cluster: HOST:PORT of its head (GCS), ray://HOST:PORT, or auto "
        "(the cluster started on this machine); default: RAY_ADDRESS, else auto",
    )
    add(
        "--namespace",
        type=_namespace,
        default=os.environ.get("GHBOT_NAMESPACE") or "ghbot",
        help="the deployment's Ray namespace (default: GHBOT_NAMESPACE, else ghbot)",
    )
    if json_instead_of:
        add("--json", action="store_true", help=f"print JSON instead of {json_instead_of}")


def _namespace(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a Ray namespace is not empty")
    return text


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print left-aligned columns, two spaces apart, under upper-case headers."""
    cells = [[str(h).upper() for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    _cluster_arguments(parser, json_instead_of="a table")


def _run_status(args: argparse.Namespace) -> int:
    """Print each shard's counters; exit 0 (2 if no cluster or no deployment)."""
    from actors.ray import admin

    with connected(args):
        admin.require_shards(args.namespace)
        found = admin.stats(args.namespace)
    if args.json:
        _print_json(found)
        return 0
    columns = ["index", "version", "received", "duplicates", "active", "busy", "open_breakers"]
    columns += ["activations", "passivations", "snapshots"]
    _print_table(["shard", *columns[1:]], [[s.get(c, "") for c in columns] for s in found])
    return 0


def _dead_letters_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="list the dead letters, oldest first", description="List the dead letters."
    )
    _cluster_arguments(listing, json_instead_of="a table")
    replay = actions.add_parser(
        "replay",
        help="run a dead letter's handlers again",
        description="Run a delivery's dead-lettered handlers again, from attempt 1.",
    )
    replay.add_argument("delivery_id", metavar="DELIVERY_ID", help="the delivery's GUID")
    replay.add_argument("--handler", help="replay only this handler (default: every one)")
    _cluster_arguments(replay)


def _run_dead_letters(args: argparse.Namespace) -> int:
    """`list`: print them, exit 0. `replay`: exit 0 if any was replayed, 1 if none matched.

    Exit 2 (one line on stderr) when no cluster is reachable, the namespace has no
    deployment, or the shard holding the dead letter is being replaced.
    """
    from actors.ray import admin

    with connected(args):
        admin.require_shards(args.namespace)
        if args.action == "list":
            return _list_dead_letters(admin.dead_letters(args.namespace), args.json)
        replayed = admin.replay(args.namespace, args.delivery_id, args.handler)
    if replayed == 0:
        which = f" for handler {args.handler!r}" if args.handler else ""
        print(f"ghbot: no dead letter of delivery {args.delivery_id}{which}", file=sys.stderr)
        return 1
    print(f"replayed {replayed} handler(s) of delivery {args.delivery_id}")
    return 0


def _redeliver_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        type=_lookback,
        help="how far back to look: 90m, 24h, 3d (default: 6h; GitHub keeps deliveries "
        "3 days, 7 on GHES)",
    )
    _cluster_arguments(parser, json_instead_of="a summary")


def _lookback(text: str) -> float:
    """`--since`'s value in seconds: a duration from 1 minute to 7 days."""
    from ghbot.config import parse_duration
    from ghbot.redelivery import GHES_WINDOW

    try:
        seconds = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (90m, 24h, 3d)") from None
    if not 60 <= seconds <= GHES_WINDOW:
        raise argparse.ArgumentTypeError(f"{text!r} is not from 1 minute to 7 days")
    return seconds


def _run_redeliver(args: argparse.Namespace) -> int:
    """Sweep now; exit 0 (2 if no cluster or no deployment, or GitHub refused the listing)."""
    from actors.ray import admin

    with connected(args):
        admin.require_shards(args.namespace)
        found = admin.sweep(args.namespace, args.since)
    if args.json:
        _print_json(found)
        return 0
    print(
        f"{found['listed']} delivery attempts listed, {found['failed']} deliveries failed, "
        f"{found['held']} of them journaled anyway; asked GitHub to redeliver "
        f"{len(found['redelivered'])}, gave up on {len(found['gave_up'])}"
    )
    for guid in found["redelivered"]:
        print(f"redelivered {guid}")
    for guid in found["gave_up"]:
        print(f"gave up on {guid}")
    if found.get("deferred"):
        print(
            f"{found['deferred']} not asked for yet: an ask met a rate limit (GitHub's, "
            "or the app's own count), a 5xx or no answer; later sweeps ask for them "
            "(scheduled ones, or this command again)"
        )
    return 0


def _list_dead_letters(found: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        _print_json(found)
        return 0
    if not found:
        print("no dead letters")
        return 0
    headers = ["delivery", "event", "installation", "handler", "attempts", "error", "at"]
    rows = [
        [
            d["delivery_id"],
            d.get("event", ""),
            d.get("installation_id", ""),
            d["handler"],
            d["attempts"],
            _one_line(f"{d['error_type']}: {d['error']}", 60),
            _when(d["at"]),
        ]
        for d in found
    ]
    _print_table(headers, rows)
    return 0


def _serve_env_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cores",
        type=_cores,
        default=None,
        help="the cores of the node Ray will run on (default: this machine's)",
    )


def _cores(text: str) -> int:
    try:
        cores = int(text)
    except ValueError:
        cores = 0
    if cores < 1:
        raise argparse.ArgumentTypeError(f"not a number of cores: {text!r}")
    return cores


def _run_serve_env(args: argparse.Namespace) -> int:
    """Print `serve_environment` as shell exports, one a line; exit 0."""
    from actors.ray.deploy import serve_environment

    for name, value in serve_environment(args.cores).items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def _stop_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app",
        default=None,
        help="the Serve application to delete, which must run ghbot's ingress "
        "(default: the one that does)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long each shard may take to finish the deliveries it took (default 30)",
    )
    _cluster_arguments(parser, json_instead_of="a summary")


def _run_stop(args: argparse.Namespace) -> int:
    """Stop the deployment; exit 0 (2 if no cluster or no deployment)."""
    from actors.ray import admin

    with connected(args):
        admin.require_shards(args.namespace)
        found = admin.stop(args.namespace, args.app, args.drain_timeout)
    if args.json:
        _print_json(found)
        return 0
    if found["app_deleted"]:
        print(f"deleted the Serve application {found['app']!r}: no new deliveries")
    else:
        which = repr(args.app) if args.app else "runs ghbot's ingress"
        print(f"no Serve application {which}: only the actors were stopped")
    print(
        f"{found['drained']} of {found['shards']} shards finished their deliveries "
        f"(the rest stay pending in the journal); {found['killed']} actors stopped"
    )
    return 0


# --- ghbot journal reshard ----------------------------------------------------------------
#
# Here, among the cluster commands, because it must refuse while the deployment's shard
# actors run, and only Ray can tell that. The move itself is the journal's
# (`ghbot.journal.reshard_journal`), with the runtime's routing (`stream_vshard`).

MAX_VSHARDS = 4096
"""The most virtual shards a deployment may have (as `GHBOT_VSHARDS`)."""


def _vshard_count(text: str) -> int:
    count = whole_number(text)
    if count is None or not 1 <= count <= MAX_VSHARDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to {MAX_VSHARDS}")
    return count


def _journal_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    what = (
        "Move every journal stream to its virtual shard under N (events, snapshots, dead "
        "letters, delivery GUIDs kept; every shard fenced with a new epoch) and record N. "
        "Stop the deployment first (ghbot stop); then deploy with GHBOT_VSHARDS=N."
    )
    reshard = actions.add_parser(
        "reshard", help="change the number of virtual shards (offline)", description=what
    )
    add = reshard.add_argument
    add("--to", type=_vshard_count, required=True, metavar="N", help="the new GHBOT_VSHARDS")
    add(
        "--journal",
        metavar="URL",
        help="the journal (default: GHBOT_JOURNAL_URL, else ./data/journal)",
    )
    add(
        "--offline",
        action="store_true",
        help="no Ray cluster runs the deployment any more: do not ask one whether its "
        "shards run (any shard left writing is fenced all the same)",
    )
    _cluster_arguments(reshard)


def _run_journal(args: argparse.Namespace) -> int:
    """Reshard the journal; exit 0 (2 if shards run, no cluster answers, or it cannot)."""
    import asyncio

    from actors.wire import stream_vshard
    from ghbot.config import default_journal_url
    from ghbot.journal import reshard_journal

    url = args.journal or os.environ.get("GHBOT_JOURNAL_URL", "").strip() or default_journal_url()
    if not args.offline:
        _refuse_if_running(args)
    done = asyncio.run(reshard_journal(url, args.to, stream_vshard))
    if done.from_count is None:
        before = "a journal with no record of its virtual shards"
    else:
        before = f"{done.from_count} virtual shards"
    print(
        f"resharded the journal from {before} to {done.to_count}: moved {done.moved} of "
        f"{done.streams} streams; every shard is at epoch {done.epoch}"
    )
    print(f"now deploy with GHBOT_VSHARDS={done.to_count}")
    return 0


def _refuse_if_running(args: argparse.Namespace) -> None:
    """Raise `UsageError` if shard actors of the namespace run (`ClusterError` if no
    cluster answers, saying to pass --offline when none runs the deployment)."""
    from actors.ray import admin
    from ghbot.errors import UsageError

    try:
        with connected(args):
            running = len(admin.shards(args.namespace))
    except ClusterError as exc:
        raise ClusterError(
            f"{exc}; to reshard with no Ray cluster running the deployment, pass --offline"
        ) from None
    if running:
        raise UsageError(
            f"{running} shard actor(s) of the deployment run in Ray namespace "
            f"{args.namespace!r}: stop it first (ghbot stop --namespace {args.namespace}), "
            "then run this again"
        )


register(
    Command(
        "journal",
        "Operate on the journal while the deployment is stopped: `reshard --to N` changes "
        "its number of virtual shards.",
        _journal_arguments,
        _run_journal,
    )
)
register(
    Command(
        "status",
        "Show a running deployment's shards: deliveries received, installations active, "
        "open breakers.",
        _status_arguments,
        _run_status,
    )
)
register(
    Command(
        "dead-letters",
        "List a running deployment's dead letters, or replay one.",
        _dead_letters_arguments,
        _run_dead_letters,
    )
)
register(
    Command(
        "redeliver",
        "Sweep now for webhook deliveries GitHub failed to deliver and that the journal "
        "lacks, and ask GitHub to redeliver them (the deployment also does this on its own).",
        _redeliver_arguments,
        _run_redeliver,
    )
)
register(
    Command(
        "serve-env",
        "Print the Serve settings ghbot runs with on this machine (or --cores N) as shell "
        'exports: `eval "$(ghbot serve-env)"` before Ray starts.',
        _serve_env_arguments,
        _run_serve_env,
    )
)
register(
    Command(
        "stop",
        "Stop a running deployment: delete its Serve application, let each shard finish "
        "the deliveries it took, then stop the shards and the app-auth actor.",
        _stop_arguments,
        _run_stop,
    )
)
