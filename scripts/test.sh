#!/usr/bin/env bash
# Every test, in two lanes at once (what `make test` runs after lint and types):
# the tests that start a real Ray (`-m cluster`: one Ray for the session, several
# minutes, mostly waiting on it) in the foreground, and beside them the others
# (in-process, a few minutes of CPU), then the cluster launcher test (`ray up` over
# SSH to a Ray of its own, about two minutes, mostly installing Ray into its node),
# their output shown when both lanes are done. The launcher test and the demo test
# both take port 8000, so each holds /tmp/ghbot-ray.lock while it runs (tests/net.py).
# Exits non-zero if any run failed. Arguments go to every pytest run.
set -uo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
launcher=tests/cluster/test_launcher.py
side_log=$(mktemp)
# The Ray lane is the longer one: the other yields the CPU to it (nice), and still
# ends minutes before it.
(
    nice -n 10 "$python" -m pytest -q -p no:cacheprovider -m "not cluster" "$@"
    unit=$?
    echo "== the cluster launcher test ($launcher) =="
    nice -n 10 "$python" -m pytest -q -p no:cacheprovider -m cluster "$launcher" "$@"
    launched=$?
    [ "$launched" -eq 5 ] && launched=0  # arguments that select none of it: not a failure
    echo "== the others: exit $unit; the launcher test: exit $launched =="
    [ "$unit" -eq 0 ] && [ "$launched" -eq 0 ]
) >"$side_log" 2>&1 &
side_pid=$!
# Stop the other lane if this script is interrupted (by its pid, never by name).
trap 'kill "$side_pid" 2>/dev/null; rm -f "$side_log"' INT TERM
echo "== tests that start Ray (-m cluster); the others run beside them =="
"$python" -m pytest -q -p no:cacheprovider -m cluster --deselect "$launcher" --durations=15 "$@"
cluster_status=$?
wait "$side_pid"
side_status=$?
echo "== tests without Ray (-m 'not cluster'), then the launcher test =="
cat "$side_log"
rm -f "$side_log"
echo "== cluster lane: exit $cluster_status; the other lane: exit $side_status =="
[ "$cluster_status" -eq 0 ] && [ "$side_status" -eq 0 ]
