"""Run the benchmarks one after another (`make bench`); quick configurations by default.

    python benchmarks/run_all.py [--full] [--no-ray] [--only NAME ...] [--list]

Each benchmark runs as its own process, from the repository's root, with its output
shown as it comes; a summary of names, seconds and exit codes ends the run, which
exits 1 if any benchmark failed. The quick configurations take a few minutes in all
(most of it the ones that start a local Ray); `--full` runs each one's own defaults,
which take much longer (bench_soak_memory alone ten minutes; bench_two_nodes needs
GHBOT_TEST_POSTGRES_URL and says it skipped without it). Those marked Ray start a
Ray of their own, and bench_e2e's and bench_replica_loss's Serve ingresses take port
8000: run one Ray benchmark at a time on a machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Bench:
    """A benchmark script, its arguments for a quick run, and whether it starts Ray."""

    name: str
    quick: tuple[str, ...]
    ray: bool = False

    @property
    def script(self) -> Path:
        return HERE / f"{self.name}.py"


BENCHMARKS = (
    Bench("bench_core", ("--quick",)),
    Bench("bench_events", ("--quick",)),
    Bench("bench_client", ("--quick",)),
    Bench("bench_tokens", ("--quick",)),
    Bench("bench_metrics", ("--quick",)),
    Bench("bench_journal", ("--quick",)),
    Bench("bench_shard", ("--deliveries", "800", "--repeat", "1")),
    Bench("bench_memory", ("--installations", "1000"), ray=True),
    Bench("bench_burst", ("--deliveries", "120", "--installations", "12"), ray=True),
    Bench("bench_e2e", ("--quick",), ray=True),
    Bench("bench_two_nodes", ("--deliveries", "1000", "--warmup", "200"), ray=True),
    Bench(
        "bench_replica_loss",
        ("--repeat", "1", "--intervals", "0.1", "--health-periods", "2"),
        ray=True,
    ),
    Bench(
        "bench_soak_memory",
        ("--minutes", "2", "--rate", "20", "--installations", "200"),
        ray=True,
    ),
)


@dataclass(frozen=True)
class Outcome:
    name: str
    seconds: float
    code: int


def chosen(only: list[str], *, no_ray: bool) -> list[Bench]:
    """Return the benchmarks to run, in order: those in `only` (all if empty).

    Raises `KeyError` naming a benchmark that does not exist.
    """
    known = {bench.name: bench for bench in BENCHMARKS}
    picked = [known[name] for name in only] if only else list(BENCHMARKS)
    return [bench for bench in picked if not (no_ray and bench.ray)]


def run(bench: Bench, *, full: bool) -> Outcome:
    """Run one benchmark to its end, its output passed through; return how it went."""
    argv = [sys.executable, str(bench.script), *(() if full else bench.quick)]
    print(f"\n=== {bench.name}: {' '.join(argv[2:]) or '(defaults)'}", flush=True)
    started = time.monotonic()
    try:
        code = subprocess.run(argv, cwd=ROOT, check=False).returncode
    except KeyboardInterrupt:
        code = 130
    return Outcome(bench.name, time.monotonic() - started, code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="each benchmark's own defaults")
    parser.add_argument("--no-ray", action="store_true", help="skip those that start Ray")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="run these")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for bench in BENCHMARKS:
            quick = " ".join(bench.quick) or "(defaults)"
            print(f"{bench.name:<18} {'Ray' if bench.ray else '   '}  quick: {quick}")
        return 0
    try:
        benches = chosen(args.only, no_ray=args.no_ray)
    except KeyError as unknown:
        parser.error(f"no benchmark named {unknown}; see --list")
    outcomes = []
    for bench in benches:
        outcome = run(bench, full=args.full)
        outcomes.append(outcome)
        if outcome.code == 130:
            break
    print("\n=== summary")
    for outcome in outcomes:
        verdict = "ok" if outcome.code == 0 else f"FAILED (exit {outcome.code})"
        print(f"{outcome.name:<18} {outcome.seconds:7.1f} s  {verdict}")
    return 0 if all(outcome.code == 0 for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
