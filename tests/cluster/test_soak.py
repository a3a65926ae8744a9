"""The soak (issue 15), reduced: 30 s of steady mixed load on the session's Ray, judged.

`benchmarks/soak.py` deploys ghbot (Serve ingress, two shards, app-auth, SQLite journal)
against FakeGitHub in a nice-19 load process, sends 40 deliveries a second of nine
event types over 200 installations (2 % redeliveries), with installation tokens that
ghbot must replace every 10 s, and judges memory slopes, p99 latency, journal growth,
exactly-once handling (the fault suites' history checker), dead letters and token
refreshes. ``GHBOT_SOAK_MINUTES=10`` runs the full soak (the thresholds of
`SoakConfig.full`) through this same test:

    GHBOT_SOAK_MINUTES=10 flock /tmp/ghbot-ray.lock .venv/bin/python -m pytest \
        tests/cluster/test_soak.py -s
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import soak
finally:
    sys.path.remove(str(ROOT / "benchmarks"))


def test_a_steady_mixed_load_leaks_nothing_and_loses_nothing(
    ray_serve: str, tmp_path: Path
) -> None:
    minutes = os.environ.get("GHBOT_SOAK_MINUTES")
    config = soak.SoakConfig.full(float(minutes)) if minutes else soak.SoakConfig.reduced()
    summary = soak.soak(config, ray_serve, tmp_path)
    soak.report(config, summary)
    failed = [v for v in summary["verdicts"] if not v["ok"]]
    assert not failed, "\n".join(f"{v['what']}: {v['detail']}" for v in failed)
    # The load was what it claims: handled and unhandled events, redeliveries answered 200.
    run = summary["run"]
    assert run["unhandled"] > 0 and run["statuses"].get("200", 0) > 0
