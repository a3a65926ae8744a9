"""End to end: webhooks/s from `POST /webhooks` to a comment at FakeGitHub.

Measures, in one run on this machine:

- the floor: `floor_bot.py`, a hand-rolled single-process aiohttp bot doing the same
  work (verify, decode, answer 202, comment through the API) with no durability;
- the durable floor: `floor_bot.py --durable`, the same bot committing each delivery to
  SQLite (WAL, `synchronous=FULL`, group commit) before its 202: the cheapest way to
  give ghbot's guarantee, so what ghbot's durability should cost at most;
- Probot: `probot/index.js`, the same handler on Probot 14 (Node.js), the framework
  most GitHub Apps are written with; it answers once its handler has commented, and
  journals nothing. Skipped, with the reason, without `node` or `make bench-probot`;
- the Serve ceiling: the floor's work as a Serve deployment on ghbot's ingress
  (`serve_floor.py`): the best any bot behind Serve's HTTP ingress can do here;
- the durable Serve ceiling: the same deployment committing each delivery to SQLite
  before its 202 as the durable floor does: the best any bot behind Serve's ingress
  that gives ghbot's guarantee can do here;
- the split Serve ceiling: the durable Serve ceiling in two processes, ghbot's layout
  without ghbot (`split_floor.py`): a Serve deployment verifies and hands each delivery
  over TCP to a plain process that commits it to SQLite before the 202 and then
  comments: what ghbot's layout (an ingress, and a journal and handlers in a process
  of their own) reaches here with nothing of ghbot in it, built this one way;
- ghbot: `serve run ghbot.deploy` on a local Ray (Serve's HAProxy ingress unless
  `--no-haproxy`), every delivery journaled in SQLite before its 202.

The load generator (a raw keep-alive HTTP client sending requests signed beforehand)
and the fake GitHub run in one process at nice 19 (the bots and Ray's workers at nice
15), keeping `--concurrency` requests in flight. Reported: handled webhooks/s (first
send to last comment), ack and end-to-end p50/p95/p99, the CPU the machine spent per
delivery outside the load process and inside it, the part of it the run's own
processes spent (each process listed: other work on a shared machine is left out),
the cores used idle before the run, the share of the machine's CPU time the
hypervisor took for others during the row (steal, from /proc/stat: a row with a few
per cent of it ran with less of the machine than its neighbours), how long each
process's threads waited for a core while ready to run (seconds a second, from
/proc/PID/task/TID/schedstat: where latency goes on a busy machine that CPU time does
not show), the machine's speed before and after each row against the first row's (a
fixed pure-Python loop timed on every core at once: a shared host can slow a VM by a
quarter and more with no steal to show for it, and a ratio between two rows is then
a ratio between two machines), and ghbot's throughput and CPU per delivery against
each of the others.

    python benchmarks/bench_e2e.py [--deliveries 4000] [--concurrency 32] [--quick]
        [--shards N (default: ghbot's for this machine, 1 below 4 cores)]
        [--skip-floor] [--skip-durable] [--skip-probot] [--skip-serve-floor]
        [--skip-serve-durable] [--skip-serve-split]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from actors.ray.deploy import default_shards, serve_environment
from ghbot.testing import app_key_pair

ROOT = Path(__file__).resolve().parent.parent
PROBOT = ROOT / "benchmarks" / "probot"
SECRET = "bench-secret"
IDLE_SECONDS = 5.0
#: The speed probe (`probe_seconds`): a fixed pure-Python loop, ~0.35 s of CPU on a
#: 2-core machine of 2026; one process runs it on each core at once.
PROBE = """
import time
started = time.process_time()
total = 0
for i in range(3_000_000):
    total += i * i
print(time.process_time() - started)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_ray_serve(port: int) -> None:
    """Start a new local Ray (never one found running) and Serve on 127.0.0.1:`port`."""
    import ray
    from ray import serve
    from ray.exceptions import ActorDiedError

    for attempt in (1, 2):
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
            log_to_driver=False,
        )
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            return
        except ActorDiedError as exc:
            # Seen once: Serve's HAProxy manager stopped answering its
            # health checks right after starting HAProxy, and the controller killed it.
            if attempt == 2:
                raise
            print(f"# Serve did not start ({type(exc).__name__}); again", file=sys.stderr)
            serve.shutdown()
            ray.shutdown()


def stop_ray_serve(runtime: Any) -> None:
    """Undo `start_ray_serve` and the deployment of `runtime`: the app, its actors, Serve
    (cleanly: its HAProxy must not outlive it) and Ray."""
    import ray
    from ray import serve

    from actors.ray.lifecycle import kill_actors

    serve.delete("ghbot")
    kill_actors(runtime.namespace, runtime.shards)
    serve.shutdown()
    ray.shutdown()


def bench_runtime(
    private: Path, api_url: str, journal: Path, *, log_level: str = "WARNING", **runtime: Any
) -> Any:
    """Return the `RuntimeSettings` of the benchmarks' bot (`bench_bot:Thanks`)."""
    from actors.settings import RuntimeSettings
    from ghbot.config import Settings

    settings = Settings(
        app_id=4242,
        private_key=private.read_bytes(),
        webhook_secrets=(SECRET,),
        api_url=api_url,
        journal_url=f"sqlite://{journal}",
        log_level=log_level,
    )
    return RuntimeSettings(bot="benchmarks.bench_bot:Thanks", settings=settings, **runtime)


def keys(folder: Path) -> tuple[Path, Path]:
    """Write a new app key pair into `folder`; return (private, public) paths."""
    private, public = folder / "app.pem", folder / "app.pub.pem"
    pems = app_key_pair()
    private.write_bytes(pems[0])
    public.write_bytes(pems[1])
    return private, public


class Harness:
    """The nice-19 process holding the fake GitHub and the load generator."""

    def __init__(self, public: Path, installations: int) -> None:
        # fmt: off
        command = [
            "nice", "-n", "19", sys.executable, str(ROOT / "benchmarks" / "e2e_harness.py"),
            "--public-key", str(public), "--installations", str(installations),
            "--secret", SECRET,
        ]
        # fmt: on
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.fake = self._read()["fake"]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the harness exited")
        result: dict[str, Any] = json.loads(line)
        return result

    def load(self, target: str, deliveries: int, concurrency: int, warmup: int) -> dict[str, Any]:
        """Warm up, then measure; the result also says the machine's CPU per delivery."""
        if warmup:
            self._command(target, warmup, concurrency)
        # What the machine spends with no load (Ray's and Serve's own processes).
        time.sleep(1.0)
        before, idle_began = cpu_seconds(), time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle_after = cpu_seconds()
        idle_s = time.monotonic() - idle_began
        idle = self._others(before, idle_after) / idle_s
        idle_by_name = _by_name_of(self._own(), before, idle_after, 1 / idle_s)
        probed = probe_seconds()
        own = own_processes(os.getpid(), but=self.process.pid)
        watched = {**own, self.process.pid: "load"}
        waited = waited_seconds(watched)
        before, ticks = cpu_seconds(), machine_ticks()
        result = self._command(target, deliveries, concurrency)
        after, ticks = cpu_seconds(), [b - a for a, b in zip(ticks, machine_ticks(), strict=True)]
        result["probe_s"] = [probed, probe_seconds()]  # before the row, after it
        result["waited"] = _by_name_of(
            watched, waited, waited_seconds(watched), 1 / max(result["seconds"], 1e-9)
        )
        result["steal"] = steal_share(ticks)
        result["sut_cpu_ms"] = self._others(before, after) * 1000 / deliveries
        result["idle_cores"] = idle
        result["own_idle_cores"] = idle_by_name
        result["own_cpu_ms"] = _by_name_of(self._own(), before, after, 1000 / deliveries)
        return result

    def _own(self) -> dict[int, str]:
        """This run's own processes (the bot's, Ray's), now, by pid: other work on the
        machine counts in `_others`, not by name."""
        return own_processes(os.getpid(), but=self.process.pid)

    def _others(self, before: dict[int, float], after: dict[int, float]) -> float:
        """CPU seconds spent between two `cpu_seconds()` by every process but the load's."""
        spent = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
        return sum(spent.values()) - spent.get(self.process.pid, 0.0)

    def _command(self, target: str, deliveries: int, concurrency: int) -> dict[str, Any]:
        assert self.process.stdin is not None
        command = {"target": target, "deliveries": deliveries, "concurrency": concurrency}
        self.process.stdin.write(json.dumps({**command, "warmup": 0}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


#: The field of /proc/stat's `cpu` line (after the name) that counts steal: user,
#: nice, system, idle, iowait, irq, softirq, steal.
STEAL = 7


def steal_share(ticks: list[int]) -> float:
    """Return the share of `ticks` (a /proc/stat `cpu` line's increase) that was steal:
    of user, nice, system, idle, iowait, irq, softirq and steal, not the guest fields
    after them (already counted in user and nice)."""
    return ticks[STEAL] / max(sum(ticks[: STEAL + 1]), 1)


def machine_ticks() -> list[int]:
    """Return the machine's CPU ticks by kind, as /proc/stat's `cpu` line counts them."""
    with open("/proc/stat") as stat:
        return [int(field) for field in stat.readline().split()[1:]]


def cpu_seconds() -> dict[int, float]:
    """Return the CPU time (user + system) every process on the machine has used."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    return used


def probe_seconds(cores: int | None = None, script: str = PROBE, tries: int = 3) -> float:
    """Run `script` (which prints the CPU seconds it took) in one process per core,
    all at once, `tries` times; return the least of the tries' means. A slower
    machine (a busy neighbour on the host, a lower clock) takes longer for the same
    work. The first try after an idle spell was slower too on a machine here, by up
    to a third (`benchmarks/RESULTS.md`): the least of three leaves that out."""
    argv = [sys.executable, "-c", script]
    means = []
    for _ in range(tries):
        runs = [
            subprocess.Popen([*argv, str(core)], stdout=subprocess.PIPE, text=True)
            for core in range(cores or os.cpu_count() or 1)
        ]
        took = [float(run.communicate(timeout=60)[0]) for run in runs]
        means.append(sum(took) / len(took))
    return min(means)


def speeds(results: Iterable[dict[str, Any]]) -> list[tuple[float, float]]:
    """Each row's machine speed before and after it, against the first row's before
    (1.0: the same; 0.8: the same work took 1.25 times as long)."""
    probes = [result["probe_s"] for result in results]
    if not probes:
        return []
    first = probes[0][0]
    return [(first / before, first / after) for before, after in probes]


def speed_warning(speed: list[tuple[float, float]], spread: float = 0.1) -> str | None:
    """Return what to say when the rows' speeds (before, after, against the first row's)
    moved more than `spread`; None for a quiet machine."""
    seen = [s for pair in speed for s in pair]
    if not seen or max(seen) - min(seen) <= spread:
        return None
    return (
        f"# the machine's speed moved between {min(seen):.2f} and {max(seen):.2f} of"
        " the first row's: not a quiet machine, and the ratios below compare rows that"
        " ran at different speeds"
    )


def waited_seconds(pids: Iterable[int]) -> dict[int, float]:
    """Return the seconds each process's threads have spent ready to run while no core
    was free for them (the second field of /proc/PID/task/TID/schedstat, summed over
    its threads): where a busy machine's latency goes that CPU time does not show.
    A process, or a kernel, that does not say is left out."""
    waited: dict[int, float] = {}
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        total = 0
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                    total += int(stat.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
        waited[pid] = total / 1e9
    return waited


def _by_name_of(
    names: dict[int, str], before: dict[int, float], after: dict[int, float], scale: float
) -> dict[str, float]:
    """`after - before` × `scale` by process name, most first (a process gone since is
    left out; one new since counts from zero)."""
    by_name: dict[str, float] = {}
    for pid, name in names.items():
        if pid in after:
            by_name[name] = by_name.get(name, 0.0) + (after[pid] - before.get(pid, 0.0)) * scale
    return dict(sorted(by_name.items(), key=lambda item: -item[1]))


def own_processes(root: int, but: int) -> dict[int, str]:
    """Return `root` and the processes descending from it, less `but` and its own, by
    pid: their names (a script's or a Ray worker's title rather than the interpreter's)."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                head, tail = stat.read().rsplit(")", 1)
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        children.setdefault(int(tail.split()[1]), []).append(int(entry))
        names[int(entry)] = process_name(argv) or head.split("(", 1)[1]
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid != but and pid in names:
            found[pid] = names[pid]
            todo += children.get(pid, [])
    return found


def process_name(argv: list[str]) -> str:
    """`floor_bot.py` for `python .../floor_bot.py --port ...`, `raylet` for Ray's."""
    words = [word for word in argv if word and not word.startswith("-")]
    if not words:
        return ""
    if words[0].startswith("ray::"):
        return words[0][:40]
    first = Path(words[0]).name
    if first.startswith("python") and len(words) > 1:
        return Path(words[1]).name
    if first == "node" and len(words) > 1:
        return f"node {Path(words[1]).name}"
    return first


def start_bot(script: str, port: int, harness: Harness, private: Path, *more: str) -> Any:
    """Start `benchmarks/<script>` on `port` and return its process once it says ready."""
    # At nice 15, like Ray's workers: the floor gets the same priority over its load.
    command = [sys.executable, str(ROOT / "benchmarks" / script), "--port", str(port)]
    command += ["--api", harness.fake, "--app-id", "4242", "--key", str(private), *more]
    bot = subprocess.Popen(
        ["nice", "-n", "15", *command],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert bot.stdout is not None
    if bot.stdout.readline().strip() != "ready":
        bot.kill()
        bot.wait()
        raise RuntimeError(f"{script} did not start")
    return bot


def run_floor(
    harness: Harness, private: Path, args: argparse.Namespace, durable: Path | None = None
) -> dict[str, Any]:
    """Load floor_bot.py (with `durable`, committing deliveries to that SQLite file)."""
    port = free_port()
    more = ["--secret", SECRET] + (["--durable", str(durable)] if durable is not None else [])
    bot = start_bot("floor_bot.py", port, harness, private, *more)
    try:
        return harness.load(
            f"http://127.0.0.1:{port}", args.deliveries, args.concurrency, args.warmup
        )
    finally:
        bot.kill()
        bot.wait()


def probot_missing() -> str | None:
    """Why the Probot bot cannot run here, or None if it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (PROBOT / "node_modules" / "probot").is_dir():
        return "benchmarks/probot/node_modules is absent (make bench-probot installs it)"
    return None


def run_probot(harness: Harness, private: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Load the Probot bot (`probot/index.js`), configured as any Probot app: by env."""
    port = free_port()
    fake = harness.fake.split("://", 1)[1].rstrip("/")
    env = {
        **os.environ,
        "APP_ID": "4242",
        "PRIVATE_KEY_PATH": str(private),
        "WEBHOOK_SECRET": SECRET,
        "GHE_HOST": fake,
        "GHE_PROTOCOL": "http",
        "PORT": str(port),
        "LOG_LEVEL": "warn",
        "NODE_ENV": "production",
    }
    # Its log goes to our stderr, leaving stdout to the table.
    bot = subprocess.Popen(
        ["nice", "-n", "15", "node", "index.js"], cwd=PROBOT, env=env, stdout=sys.stderr
    )
    try:
        wait_listening(port, bot)
        return harness.load(
            f"http://127.0.0.1:{port}", args.deliveries, args.concurrency, args.warmup
        )
    finally:
        bot.kill()
        bot.wait()


def wait_listening(port: int, process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """Return once something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the bot exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


def run_on_serve(
    harness: Harness,
    private: Path,
    args: argparse.Namespace,
    data: Path,
    *,
    floor: bool = False,
    durable: Path | None = None,
    split: Path | None = None,
) -> dict[str, Any]:
    """Deploy ghbot (or, with `floor`, `serve_floor.ServeFloor`, committing deliveries to
    `durable` if given; or, with `split`, `split_floor.SplitIngress` and its journal
    process, committing to that file) on Serve and load it."""
    if not args.no_haproxy:
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    if not args.serve_defaults:
        # What `ghbot serve-env` prints (README): Serve's high-throughput mode, HAProxy's
        # threads chosen for this machine's cores. The Serve ceiling runs with them too:
        # the same ingress.
        for name, value in serve_environment().items():
            if name != "RAY_SERVE_ENABLE_HA_PROXY" or not args.no_haproxy:
                os.environ.setdefault(name, value)
    if args.no_ray_metrics:
        # Ray's own metrics agent costs ~14 % of a core here even without the dashboard.
        os.environ["RAY_enable_metrics_collection"] = "0"  # noqa: SIM112 - Ray spells it so
    from ray import serve

    from actors.ray.admin import stats as shard_stats
    from actors.ray.deploy import application

    port = 8000 if not args.no_haproxy else free_port()
    start_ray_serve(port)
    runtime = bench_runtime(
        private,
        harness.fake,
        data / "journal",
        shards=args.shards,
        vshards=args.vshards or args.shards,
        ingress_replicas=args.replicas,
        pace_writes=None,
        batch_inflight=args.batch_inflight,
        shard_channel=args.shard_channel == "tcp",
    )
    journal_process = None
    try:
        if floor or split is not None:
            # The same Serve options as ghbot's ingress, floor_bot's work inside. Import
            # it as Ray's workers will (PYTHONPATH is the repository's root there).
            sys.path.insert(0, str(ROOT))
            from benchmarks.serve_floor import ServeFloor
            from benchmarks.split_floor import SplitIngress

            deployment = serve.deployment(
                num_replicas=args.serve_floor_replicas,
                ray_actor_options={"num_cpus": 0},
                max_ongoing_requests=2000,
                logging_config={"enable_access_log": False, "log_level": "WARNING"},
            )
            if split is not None:
                journal_port = free_port()
                journal_process = start_bot(
                    "split_floor.py", journal_port, harness, private, "--durable", str(split)
                )
                app = deployment(SplitIngress).bind(SECRET, journal_port)
            else:
                app = deployment(ServeFloor).bind(
                    harness.fake, "4242", private.read_bytes(), SECRET, durable and str(durable)
                )
            serve.run(app, name="ghbot", route_prefix="/")
            return harness.load(
                f"http://127.0.0.1:{port}", args.deliveries, args.concurrency, args.warmup
            )
        serve.run(application(runtime), name="ghbot", route_prefix="/")
        result = harness.load(
            f"http://127.0.0.1:{port}", args.deliveries, args.concurrency, args.warmup
        )
        stats = shard_stats(runtime.namespace)
        batches = sum(s["batches"] for s in stats)
        print(
            f"# ghbot: {sum(s['received'] for s in stats) / max(batches, 1):.1f} deliveries a batch"
        )
        if not args.no_ray_metrics:
            print(ack_path(batches), flush=True)
        return result
    finally:
        stop_ray_serve(runtime)
        if journal_process is not None:
            journal_process.kill()
            journal_process.wait()


def ack_path(calls: int, within: float = 60.0) -> str:
    """Where an acknowledgement's time went, from ghbot's own histograms on Ray's export.

    The mean time of the ingress's calls to its shard (`ghbot_shard_call_duration_seconds`)
    and of the shard's journal calls (`ghbot_journal_append_duration_seconds`: each a
    group of appends, ingests' and handlers' outcomes', until it is durable; the
    journal may commit two in one transaction), warm-up included, once Ray's export
    shows (nearly) all `calls` and the journal calls have stopped growing.
    """
    import urllib.request

    import ray
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict[str, float]:
        totals: dict[str, float] = {}
        for node in ray.nodes():
            if not node["Alive"]:
                continue
            url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            with urllib.request.urlopen(url, timeout=10) as answer:
                text = answer.read().decode()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.labels.get("outcome") == "ok" and "duration" in sample.name:
                        totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals

    deadline = time.monotonic() + within
    totals = scrape()
    shard, journal = (
        "ray_ghbot_shard_call_duration_seconds",
        "ray_ghbot_journal_append_duration_seconds",
    )
    while totals.get(f"{shard}_count", 0) < 0.98 * calls and time.monotonic() < deadline:
        time.sleep(2)
        totals = scrape()
    # The shard's process exports on its own clock, after the ingress's: wait until its
    # journal calls hold still for longer than a value takes to show (~15 s).
    seen, still_since = totals.get(f"{journal}_count", 0), time.monotonic()
    while time.monotonic() - still_since < 16 and time.monotonic() < deadline:
        time.sleep(2)
        totals = scrape()
        if totals.get(f"{journal}_count", 0) != seen:
            seen, still_since = totals.get(f"{journal}_count", 0), time.monotonic()

    def mean(name: str) -> str:
        count = totals.get(f"{name}_count", 0.0)
        return f"{1e3 * totals[f'{name}_sum'] / count:.2f} ms" if count else "none exported"

    return (
        f"# ghbot: mean shard call {mean(shard)} (the ingress's wait for a batch's journaling), "
        f"of which the wait for the journal's commit {mean(journal)} "
        f"({totals.get(f'{journal}_count', 0):.0f} journal calls, ingests' and outcomes', "
        f"{totals.get(f'{shard}_count', 0):.0f} of {calls} shard calls exported)"
    )


def row(name: str, result: dict[str, Any], speed: tuple[float, float]) -> str:
    ack, e2e = result["ack_ms"], result["e2e_ms"]
    return (
        f"{name:<8}{result['handled']:>7}/{result['deliveries']:<7}{result['throughput']:>9.0f}"
        f"{ack['p50']:>8.1f}{ack['p95']:>8.1f}{ack['p99']:>8.1f}"
        f"{e2e['p50']:>8.1f}{e2e['p95']:>8.1f}{e2e['p99']:>8.1f}"
        f"{result['sut_cpu_ms']:>8.2f}{sum(result['own_cpu_ms'].values()):>8.2f}"
        f"{result['harness_cpu_ms']:>8.2f}"
        f"{result['idle_cores']:>8.2f}{100 * result['steal']:>7.1f}%"
        f"{speed[0]:>6.2f}/{speed[1]:.2f}  {result['statuses']}"
    )


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--installations", type=int, default=200)
    parser.add_argument(
        "--shards",
        type=int,
        default=default_shards(),
        help="shard actors (default: ghbot's own default for this machine's cores)",
    )
    parser.add_argument("--vshards", type=int, default=0, help="default: --shards")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument(
        "--batch-inflight", type=int, default=2, help="batches in flight to each shard"
    )
    parser.add_argument(
        "--shard-channel",
        choices=("tcp", "ray"),
        default="tcp",
        help="batches to a shard over its TCP channel (the default) or as Ray calls",
    )
    parser.add_argument("--no-haproxy", action="store_true")
    parser.add_argument(
        "--serve-defaults",
        action="store_true",
        help="leave Serve's settings alone (not `ghbot serve-env`'s)",
    )
    parser.add_argument("--no-ray-metrics", action="store_true", help="no Ray metrics agent")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--skip-durable", action="store_true", help="no durable floor")
    parser.add_argument("--skip-probot", action="store_true")
    parser.add_argument(
        "--skip-serve-floor",
        action="store_true",
        help="no Serve ceiling (the floor bot's work as a Serve deployment, serve_floor.py)",
    )
    parser.add_argument(
        "--skip-serve-durable",
        action="store_true",
        help="no durable Serve ceiling (the same, committing each delivery to SQLite first)",
    )
    parser.add_argument(
        "--skip-serve-split",
        action="store_true",
        help="no split Serve ceiling (the durable one in two processes, split_floor.py)",
    )
    parser.add_argument(
        "--serve-floor", action="store_true", help="the default now; kept for older commands"
    )
    parser.add_argument(
        "--serve-floor-replicas", type=int, default=1, help="its replicas (1 was fastest here)"
    )
    parser.add_argument("--quick", action="store_true", help="1,000 deliveries, 200 warm-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.deliveries, args.warmup = 1000, 200
    return args


def main() -> None:
    args = parse_arguments()
    if args.warmup < args.installations:
        print("# warm-up < installations: token exchanges (a JWT each) fall in the measured run")
    skip_probot = "--skip-probot" if args.skip_probot else probot_missing()
    if skip_probot:
        print(f"# probot: skipped, {skip_probot}", flush=True)
    others: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        private, public = keys(Path(tmp))
        harness = Harness(public, args.installations)
        try:
            if not args.skip_floor:
                others["floor"] = run_floor(harness, private, args)
            if not args.skip_durable:
                durable = Path(tmp) / "durable.sqlite"
                others["durable"] = run_floor(harness, private, args, durable)
            if not skip_probot:
                others["probot"] = run_probot(harness, private, args)
            if not args.skip_serve_floor:
                others["serve-fl"] = run_on_serve(harness, private, args, Path(tmp), floor=True)
            if not args.skip_serve_durable:
                durable = Path(tmp) / "serve-durable.sqlite"
                others["serve-du"] = run_on_serve(
                    harness, private, args, Path(tmp), floor=True, durable=durable
                )
            if not args.skip_serve_split:
                split = Path(tmp) / "serve-split.sqlite"
                others["serve-sp"] = run_on_serve(harness, private, args, Path(tmp), split=split)
            started = time.monotonic()
            ours = run_on_serve(harness, private, args, Path(tmp))
            print(f"# ghbot run took {time.monotonic() - started:.0f} s with start and stop")
        finally:
            harness.close()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"# {args.deliveries} deliveries, {args.warmup} warm-up, concurrency {args.concurrency}")
    heads = ["handled".rjust(15), "hooks/s".rjust(9)]
    heads += [h.rjust(8) for h in ("ack p50", "p95", "p99", "e2e p50", "p95", "p99")]
    heads += [h.rjust(8) for h in ("cpu ms", "own ms", "load ms", "idle", "steal")]
    heads.append("speed".rjust(10))
    print(" " * 8 + "".join(heads))
    print(
        "# cpu ms: the machine's CPU per delivery outside the load process (bot, Ray, HAProxy, ...)"
    )
    print("# own ms: the part of cpu ms this run's own processes spent (listed below)")
    print("# load ms: the load process's (load generator and fake GitHub) CPU per delivery")
    print("# idle: cores the machine (outside the load process) used with no load, before the run")
    print("# steal: the share of the machine's CPU time the hypervisor gave others during the row")
    print(
        "# speed: the machine's speed before/after the row against before the first row"
        " (a loop timed on every core)"
    )
    rows = [*others.items(), ("ghbot", ours)]
    speed = speeds(result for _, result in rows)
    for (name, result), pair in zip(rows, speed, strict=True):
        print(row(name, result, pair))
    if warning := speed_warning(speed):
        print(warning)
    if skip_probot:
        print(f"# probot: skipped, {skip_probot}")
    for name, result in rows:
        spent = ", ".join(f"{n} {ms:.2f}" for n, ms in result["own_cpu_ms"].items() if ms >= 0.01)
        print(f"# {name} CPU ms per delivery by process: {spent}")
        waits = ", ".join(f"{n} {s:.2f}" for n, s in result.get("waited", {}).items() if s >= 0.01)
        if waits:
            print(f"# {name} run-queue wait by process, seconds a second: {waits}")
        idle = result.get("own_idle_cores", {})
        if sum(idle.values()) >= 0.01:
            spent = ", ".join(f"{n} {cores:.3f}" for n, cores in idle.items() if cores >= 0.001)
            print(f"# {name} idle cores by process: {spent}")
    for name, result in others.items():
        own = sum(ours["own_cpu_ms"].values()) / sum(result["own_cpu_ms"].values())
        print(
            f"ghbot / {name:<8} throughput {ours['throughput'] / result['throughput']:5.2f},"
            f" cpu ms {ours['sut_cpu_ms'] / result['sut_cpu_ms']:5.2f}, own ms {own:5.2f}"
        )
    # What durability alone costs a bot of the same work, without ghbot: the bound it
    # puts on ghbot against the rows without a journal. And what handing each delivery
    # to a process of its own costs on top (the split ceiling): the bound ghbot's layout
    # puts on it, whatever ghbot's own code costs.
    pairs = [("durable", "floor"), ("serve-du", "serve-fl")]
    pairs += [("serve-sp", "serve-fl"), ("serve-sp", "serve-du"), ("serve-sp", "durable")]
    for bound, against in pairs:
        if bound in others and against in others:
            print(
                f"{bound} / {against:<8} throughput"
                f" {others[bound]['throughput'] / others[against]['throughput']:5.2f}, cpu ms"
                f" {others[bound]['sut_cpu_ms'] / others[against]['sut_cpu_ms']:5.2f}"
            )


if __name__ == "__main__":
    main()
