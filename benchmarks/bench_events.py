"""Benchmark webhook decoding against `json.loads`, the floor it must not fall below.

For each fixture payload, time `json.loads(body)` (an untyped dict, the floor),
`ghbot.events.parse(name, body)` (typed payload) and `decode_envelope(body)` (routing
fields only), and print µs per call and floor/ours ratios: >= 1.0 means at least as
fast as `json.loads`. Exits 1 when `parse` is slower than the floor for any payload.

    python benchmarks/bench_events.py [--quick]

Baseline (2 shared cores, CPython 3.11, msgspec 0.22, best of 7 x 2000 calls):

    payload                     bytes  json.loads   parse  envelope  parse x  env x
    issues.opened               13520       170.4    45.2      16.2     3.77  10.50
    pull_request.opened         25193       283.6    78.0      27.0     3.63  10.49
    push                         7859       102.8    27.8      10.9     3.70   9.40
    check_run.completed         13887       189.8    55.3      18.0     3.43  10.57
    issue_comment.created       14643       179.1    49.3      17.8     3.63  10.07
    workflow_run.completed      19234       211.7    71.7      19.7     2.95  10.75
    release.published            8611       103.6    29.0      11.1     3.57   9.34

Models generated from GitHub's official webhooks description (one struct per event and
action), another 2-core machine, before → after that change (µs per call, parse x):

    payload                     json.loads  parse before  parse after  x before  x after
    issues.opened                     35.6          10.8         14.9      3.62     2.38
    pull_request.opened               59.4          17.9         27.2      3.30     2.18
    push                              21.3           6.5          9.6      3.28     2.21
    check_run.completed               39.4          12.1         16.1      3.16     2.45
    issue_comment.created             36.3          11.1         15.3      3.33     2.38
    workflow_run.completed            48.0          17.8         18.6      2.51     2.58
    release.published                 33.8           6.3         10.6      3.47     3.18

(`json.loads` is the after run's; each x is its own run's floor/parse ratio.) The tag
costs nothing (decoding `IssuesOpened` alone takes as long as the union); the
time is in the fields the new models type that the old ones merged or left out.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from collections.abc import Callable

from ghbot.events import decode_envelope, parse
from ghbot.testing.payloads import EXAMPLES

FIXTURES = EXAMPLES
PAYLOADS = (
    "issues.opened",
    "pull_request.opened",
    "push",
    "check_run.completed",
    "issue_comment.created",
    "workflow_run.completed",
    "release.published",
)


def best_us(func: Callable[[], object], number: int, repeat: int) -> float:
    """Return the best time of `repeat` runs of `number` calls, in µs per call."""
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number * 1e6


def bench(stem: str, number: int, repeat: int) -> tuple[int, float, float, float]:
    """Return (size, json.loads µs, parse µs, decode_envelope µs) for one fixture."""
    body = (FIXTURES / f"{stem}.json").read_bytes()
    name = stem.split(".")[0]
    parse(name, body)  # build and cache the decoder outside the timing
    floor = best_us(lambda: json.loads(body), number, repeat)
    typed = best_us(lambda: parse(name, body), number, repeat)
    envelope = best_us(lambda: decode_envelope(body), number, repeat)
    return len(body), floor, typed, envelope


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls: a smoke run")
    args = parser.parse_args(argv)
    number, repeat = (200, 3) if args.quick else (2000, 7)
    print(f"{'payload':<26} {'bytes':>6} {'json.loads':>11} {'parse':>7} {'envelope':>9}", end="")
    print(f" {'parse x':>8} {'env x':>6}   (µs per call; x = json.loads time / ours)")
    slower = []
    for stem in PAYLOADS:
        size, floor, typed, envelope = bench(stem, number, repeat)
        print(f"{stem:<26} {size:>6} {floor:>11.1f} {typed:>7.1f} {envelope:>9.1f}", end="")
        print(f" {floor / typed:>8.2f} {floor / envelope:>6.2f}")
        if typed > floor:
            slower.append(stem)
    if slower:
        print(f"parse is slower than json.loads for: {', '.join(slower)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
