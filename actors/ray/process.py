"""Set up and measure a ghbot Ray process: its logging, metrics, traces, collector and GIL.

Every ghbot Ray process (an ingress replica, a shard, the app-auth actor) runs
`set_up_process` at start. `process_rss` and `sqlite_memory_used` measure the process
for the memory benchmarks and the soak (the actors' `rss` and `sqlite_memory`).
"""

from __future__ import annotations

import gc
import sys
from typing import Final

from actors.ray.metrics import install_ray_metrics
from actors.settings import RuntimeSettings
from actors.tracing import install_tracing
from ghbot.logs import configure as configure_logging

__all__ = ["set_up_process"]

#: The garbage collector's thresholds in ghbot's Ray processes (Python's are 700, 10,
#: 10): see `tune_gc`.
GC_THRESHOLDS: Final = (20_000, 50, 50)
#: Seconds a thread holds the GIL while another waits for it, in ghbot's Ray processes
#: (Python's is 0.005): see `tune_gil`.
SWITCH_INTERVAL_S: Final = 0.001


def set_up_process(settings: RuntimeSettings) -> None:
    """Set up a ghbot Ray process at start: its logging, metrics, traces and collector.

    Logs as `LOG_LEVEL` and `LOG_FORMAT` say; metrics into Ray's metrics export; spans
    to the exporter the `OTEL_*` variables name, if any; garbage collection tuned
    (`tune_gc`). Calling it again is harmless: logging replaces its own handler,
    metrics and traces are installed once a process. Also shortens the GIL's switch
    interval (`tune_gil`).
    """
    configure_logging(settings.settings.log_level, settings.settings.log_format)
    install_ray_metrics()
    install_tracing()
    tune_gc()
    tune_gil()


def tune_gc() -> None:
    """Keep Python's cycle collector from stalling the event loop.

    What exists once the process is set up (Ray, Serve, the bot's and ghbot's modules)
    lives as long as the process: `gc.freeze` takes it out of every later collection's
    scan. Cycles are then collected less often (`GC_THRESHOLDS`): the objects of a
    delivery are mostly freed by reference counting, and each collection of the old
    generations walked the whole heap while deliveries waited. In `bench_e2e.py` this
    took 8-10 % more webhooks a second and the acknowledgement's p99 from 53-61 ms to
    33 ms (`benchmarks/RESULTS.md`).
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def tune_gil() -> None:
    """Let a thread waiting for the GIL take it within 1 ms, not 5 (`SWITCH_INTERVAL_S`).

    A shard's SQLite writer thread gives the GIL up for each call into SQLite and must
    take it back from the event loop's thread, which holds it while it runs handlers:
    five or six times a transaction, while deliveries wait for the commit. In
    `bench_e2e.py` the wait for ``BEGIN`` halved, that for the statement after it fell
    by a third or more, and webhooks/s rose 7-9 % in two interleaved pairs
    (`benchmarks/RESULTS.md`).
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def sqlite_memory_used() -> int:
    """Return the bytes SQLite's allocator holds in this process (0 when the library
    `sqlite3` is linked to does not say): ``sqlite3_memory_used()``."""
    import _sqlite3
    import ctypes

    try:
        used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (OSError, AttributeError):
        return 0
    used.restype = ctypes.c_int64
    return int(used())


def process_rss() -> int:
    """Return this process's resident memory in bytes, after a garbage collection."""
    import gc

    gc.collect()
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
