"""Soak (issue 15): a steady, mixed load for minutes on a real deployment, judged.

Builds on `bench_soak_memory.py` (issue 9). ghbot runs as deployed: Ray Serve's proxy
and the ingress replica, `--shards` shard actors, the app-auth actor, the SQLite
journal, `benchmarks.soak_bot:Soak` (five events handled, each with one comment), and
FakeGitHub as a real HTTP server. The load process (`soak_load.py`, nice 19) sends
`--rate` deliveries a second of nine event types (four with no handler) over
`--installations` installations, skewed, 2 % of them redeliveries of a recent GUID;
installation tokens last `--token-lifetime` s at the fake, and ghbot replaces a token
300 s before it expires, so each active installation mints a new one every
``lifetime - 300`` s and the old ones expire at the fake within the run.

Before the clock starts every installation gets one delivery (a token each, an active
actor each), then `warmup` s of the mix (`SoakConfig`). Every `every` s the driver
samples the RSS of each shard and of the app-auth actor (their `rss()`, after a
garbage collection), of the ingress replica and of Serve's proxy and controller
(/proc), the memory SQLite holds in each shard (`sqlite_memory()`: page caches, up to
16 MiB a journal file for the writer), the journal's size (logical: SQLite pages in
use, WAL included; and each WAL file) and the tokens minted. At the end it judges
(`soak_judge.py`):

- the RSS slope over the second half of the ingress replica, the app-auth actor and
  each shard less its SQLite memory (the caches fill over the first ~1,000 deliveries
  of a file: a 30-s run ends before they are full);
- latency from first send to the handler's comment: the p99 of the last of `windows`
  windows against the first's;
- the journal: bytes per delivery in the second half against the first, WAL files and
  snapshots bounded, every delivery GUID still remembered;
- deliveries: the history checker of the fault suites (`tests/history.py`: every
  acknowledged delivery journaled once and handled once, in order), no dead letter,
  only 2xx answers; tokens replaced inside the run.

It prints a table and a JSON summary, and exits 1 if a judgement fails.

    python benchmarks/soak.py --minutes 10        # the full soak (about 12 minutes)

`tests/cluster/test_soak.py` runs it for 30 s in `make test`, on the test session's Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import soak_judge as judge  # noqa: E402
from bench_e2e import SECRET, bench_runtime, free_port, keys, start_ray_serve  # noqa: E402
from bench_soak_memory import PROCESSES, proc_rss  # noqa: E402

from ghbot.auth import TOKEN_REFRESH_MARGIN  # noqa: E402
from ghbot.journal.base import DEFAULT_KEEP_SNAPSHOTS  # noqa: E402

LOAD = ROOT / "benchmarks" / "soak_load.py"
JUDGED = ("ingress replica", "app-auth")  # and every shard


@dataclass(frozen=True)
class SoakConfig:
    seconds: float
    limits: judge.Limits
    rate: float = 40.0
    installations: int = 200
    shards: int = 2
    vshards: int = 4
    every: float = 30.0
    windows: int = 10
    warmup: float = 30.0
    token_lifetime: float = 360.0
    redeliver_share: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def full(cls, minutes: float) -> SoakConfig:
        limits = judge.Limits(mib_per_minute=1.0, latency_factor=3.0, latency_floor_ms=100.0)
        return cls(seconds=minutes * 60, limits=limits)

    @classmethod
    def reduced(cls) -> SoakConfig:
        """30 s: tokens usable 10 s, a sample every 3 s, latency in 6-s windows."""
        limits = judge.Limits(mib_per_minute=6.0, latency_factor=4.0, latency_floor_ms=150.0)
        return cls(seconds=30, limits=limits, every=3, windows=5, warmup=8, token_lifetime=310)


class LoadProcess:
    """The nice-19 process running `soak_load.py` (fake GitHub, load, history)."""

    def __init__(self, public: Path, config: SoakConfig) -> None:
        # fmt: off
        command = [
            "nice", "-n", "19", sys.executable, str(LOAD), "--public-key", str(public),
            "--secret", SECRET, "--installations", str(config.installations),
            "--token-lifetime", str(config.token_lifetime),
        ]
        # fmt: on
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.fake: str = self.ask(None)["fake"]

    def ask(self, command: dict[str, Any] | None) -> dict[str, Any]:
        """Send `command` (None: none) and return the answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        if command is not None:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the load process exited ({self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def ray_pids() -> dict[str, int]:
    """Return the pid of each of `PROCESSES` started by this driver's Ray (its raylet's
    descendants), found by Ray's process titles."""
    import ray

    node = ray._private.worker._global_node
    assert node is not None, "Ray is not started"
    raylet = node.all_processes["raylet"][0].process.pid
    parents: dict[int, int] = {}
    titles: dict[int, str] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                titles[int(entry)] = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue

    def under_raylet(pid: int) -> bool:
        while pid > 1:
            if pid == raylet:
                return True
            pid = parents.get(pid, 0)
        return False

    found = {}
    for pid, title in titles.items():
        for name, marker in PROCESSES.items():
            if title.startswith("ray::") and marker in title and under_raylet(pid):
                found[name] = pid
    return found


def journal_size(folder: Path) -> dict[str, Any]:
    """Return the journal's logical bytes (pages in use, WAL included) and its files'."""
    files: dict[int, int] = {}
    for path in folder.glob("shard-*.sqlite3"):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            pages, free, size = (
                conn.execute(f"PRAGMA {p}").fetchone()[0]
                for p in ("page_count", "freelist_count", "page_size")
            )
        finally:
            conn.close()
        files[int(path.name.split("-")[1].split(".")[0])] = (pages - free) * size
    wal = [p.stat().st_size for p in folder.glob("*-wal")]
    return {
        "journal_bytes": sum(files.values()),
        "disk_bytes": sum(p.stat().st_size for p in folder.iterdir()),
        "wal_bytes_max": max(wal, default=0),
    }


def journal_rows(folder: Path) -> dict[str, Any]:
    """Count the journal's delivery GUIDs and snapshots (the most any stream keeps)."""
    rows, snapshots, most = 0, 0, 0
    for path in folder.glob("shard-*.sqlite3"):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows += conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
            counts = conn.execute("SELECT count(*) FROM snapshots GROUP BY stream").fetchall()
        finally:
            conn.close()
        snapshots += sum(n for (n,) in counts)
        most = max([most, *(n for (n,) in counts)])
    return {
        "delivery_rows": rows,
        "snapshots": snapshots,
        "most_snapshots": most,
        "keep_snapshots": DEFAULT_KEEP_SNAPSHOTS,
    }


def sample(shards: list[Any], app_auth: Any, pids: dict[str, int], journal: Path) -> dict[str, Any]:
    """RSS (MiB) of every actor, the shards' counters, the journal's size."""
    import ray

    rss = ray.get([s.rss.remote() for s in shards] + [app_auth.rss.remote()], timeout=60)
    stats = ray.get([s.stats.remote() for s in shards], timeout=60)
    row: dict[str, Any] = {f"shard {i}": rss[i] / judge.MIB for i in range(len(shards))}
    row["app-auth"] = rss[-1] / judge.MIB
    row.update({name: proc_rss(pid) / judge.MIB for name, pid in pids.items()})
    for counter in ("received", "duplicates", "active", "busy", "snapshots", "passivations"):
        row[counter] = sum(s.get(counter, 0) for s in stats)
    sqlite = ray.get([s.sqlite_memory.remote() for s in shards], timeout=60)
    for i, held in enumerate(sqlite):
        row[f"shard {i} SQLite"] = held / judge.MIB
        row[f"shard {i} less SQLite"] = row[f"shard {i}"] - held / judge.MIB
    return {**row, **journal_size(journal)}


def soak(config: SoakConfig, target: str, tmp: Path) -> dict[str, Any]:
    """Run the soak against the Serve at `target` (Ray and Serve already started);
    return its samples, figures and verdicts. Deploys ghbot and removes it again."""
    import ray
    from ray import serve

    from actors.ray.deploy import application
    from actors.ray.lifecycle import get_or_create_actors, kill_actors, wait_ready
    from actors.ray.names import APP_AUTH_NAME

    private, public = keys(tmp)
    load = LoadProcess(public, config)
    runtime = bench_runtime(
        private,
        load.fake,
        tmp / "journal",
        log_level="ERROR",
        shards=config.shards,
        vshards=config.vshards,
        namespace=f"ghbot-soak-{os.getpid()}",
    )
    runtime = replace(runtime, bot="benchmarks.soak_bot:Soak", **config.extra).versioned()
    try:
        serve.run(application(runtime), name="ghbot", route_prefix="/")
        shards = get_or_create_actors(runtime)
        wait_ready(shards)
        app_auth = ray.get_actor(APP_AUTH_NAME, namespace=runtime.namespace)
        return measure(config, target, load, shards, app_auth, tmp / "journal")
    finally:
        load.close()
        serve.delete("ghbot")
        kill_actors(runtime.namespace, runtime.shards)


def measure(
    config: SoakConfig,
    target: str,
    load: LoadProcess,
    shards: list[Any],
    app_auth: Any,
    journal: Path,
) -> dict[str, Any]:
    import ray

    mix = {"target": target, "rate": config.rate, "redeliver_share": config.redeliver_share}
    load.ask({"run": {**mix, "seconds": config.warmup, "warmup": True}})
    warm = load.ask({"wait": True})
    ray.get([s.wait_idle.remote(120.0) for s in shards])
    pids = ray_pids()
    minted_before = load.ask({"stats": True})["tokens_minted"]
    load.ask({"run": {**mix, "seconds": config.seconds}})
    began = time.monotonic()
    samples = []
    for n in range(int(config.seconds // config.every) + 1):
        time.sleep(max(began + n * config.every - time.monotonic(), 0.0))
        row = {"t": time.monotonic() - began, **sample(shards, app_auth, pids, journal)}
        samples.append({**row, **load.ask({"stats": True})})
        print(
            json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}),
            flush=True,
        )
    result = load.ask({"wait": True})
    idle = ray.get([s.wait_idle.remote(120.0) for s in shards])
    dead = sum(len(d) for d in ray.get([s.dead_letters.remote() for s in shards]))
    final = {
        **journal_rows(journal),
        "journaled": sample(shards, app_auth, pids, journal)["received"],
    }
    checked = load.ask({"check": f"sqlite://{journal}", "vshards": config.vshards})
    e2e = judge.windows(result.pop("e2e"), began, began + config.seconds, config.windows)
    acks = judge.windows(result.pop("acks"), began, began + config.seconds, config.windows)
    actors = [*(f"shard {i} less SQLite" for i in range(len(shards))), *JUDGED]
    verdicts = [
        *judge.memory(samples, actors, config.limits),
        judge.latency(e2e, config.limits),
        *judge.journal(samples, final, config.limits),
        *judge.deliveries(checked, dead, {**result["statuses"]}),
        judge.tokens(
            samples[-1]["tokens_minted"] - minted_before,
            samples[-1]["tokens_expired"],
            config.installations,
            config.token_lifetime - TOKEN_REFRESH_MARGIN,
            config.seconds,
        ),
    ]
    if not all(idle):
        verdicts.append(judge.Verdict("shards idle at the end", False, "work left after 120 s"))
    latency = [
        {
            "window": i,
            "handled": len(window),
            "e2e_p50_ms": judge.percentile(window, 0.5) * 1000,
            "e2e_p99_ms": judge.percentile(window, 0.99) * 1000,
            "ack_p99_ms": judge.percentile(ack, 0.99) * 1000,
        }
        for i, (window, ack) in enumerate(zip(e2e, acks, strict=True))
    ]
    return {
        "warmup": {k: v for k, v in warm.items() if k not in ("acks", "e2e")},
        "run": result,
        "final": final,
        "dead_letters": dead,
        "samples": samples,
        "latency": latency,
        "verdicts": [asdict(v) for v in verdicts],
        "ok": all(v.ok for v in verdicts),
    }


def report(config: SoakConfig, summary: dict[str, Any]) -> None:
    """Print the samples' table, the latency windows and the verdicts."""
    samples = summary["samples"]
    names = [k for k in samples[0] if k.startswith("shard ") or k in ("app-auth", *PROCESSES)]
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"# {config.seconds:.0f} s at {config.rate}/s over {config.installations} installations")
    print(f"# run: {summary['run']}")
    print(f"{'actor (MiB)':<22}{'first':>9}{'middle':>9}{'last':>9}{'min':>9}{'max':>9}")
    middle = samples[len(samples) // 2]
    for name in names:
        values = [s[name] for s in samples]
        print(
            f"{name:<22}{samples[0][name]:>9.1f}{middle[name]:>9.1f}{samples[-1][name]:>9.1f}"
            f"{min(values):>9.1f}{max(values):>9.1f}"
        )
    for what in ("journal_bytes", "disk_bytes", "received", "tokens_minted", "tokens_expired"):
        values = (samples[0][what], middle[what], samples[-1][what])
        print(f"{what:<22}" + "".join(f"{v:>12,.0f}" for v in values))
    for window in summary["latency"]:
        print("latency " + " ".join(f"{k} {v:.0f}" for k, v in window.items()))
    for verdict in summary["verdicts"]:
        print(f"{'ok  ' if verdict['ok'] else 'FAIL'} {verdict['what']}: {verdict['detail']}")
    print(json.dumps({k: v for k, v in summary.items() if k != "samples"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--installations", type=int, default=200)
    args = parser.parse_args()
    config = replace(
        SoakConfig.full(args.minutes), rate=args.rate, installations=args.installations
    )
    port = free_port()
    start_ray_serve(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            summary = soak(config, f"http://127.0.0.1:{port}", Path(tmp))
    finally:
        import ray
        from ray import serve

        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
    report(config, summary)
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
