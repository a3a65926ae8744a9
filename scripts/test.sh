#!/usr/bin/env bash
# Every test, in two lanes at once (what `make test` runs after lint and types):
# the tests on the session's one Ray (`-m "cluster and not own_ray"`: several minutes,
# mostly waiting on it) in the foreground, and beside them the others: first those
# without Ray (in-process, a few minutes of CPU), then the cluster tests that start a
# Ray of their own (`-m own_ray`, tests/conftest.py: the cluster launcher test's `ray
# up` over SSH, the demo, the two-raylet tests, the CLI against a token-authenticated
# head), their output shown when both lanes are done, with how long the Ray lane
# waited for them. The launcher test and the demo test both take port 8000, so each
# holds /tmp/ghbot-ray.lock while it runs (tests/net.py), for a run that does not go
# through this script.
# Exits non-zero if any run failed. Arguments go to every pytest run.
set -uo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
side_log=$(mktemp)
# The Ray lane is the longer one: the other yields the CPU to it (nice), and still
# ends before it.
(
    nice -n 10 "$python" -m pytest -q -p no:cacheprovider -m "not cluster" "$@"
    unit=$?
    echo "== the cluster tests that start a Ray of their own (-m own_ray) =="
    nice -n 10 "$python" -m pytest -q -p no:cacheprovider -m own_ray --durations=5 "$@"
    own=$?
    [ "$own" -eq 5 ] && own=0  # arguments that select none of them: not a failure
    echo "== the others: exit $unit; those with a Ray of their own: exit $own =="
    [ "$unit" -eq 0 ] && [ "$own" -eq 0 ]
) >"$side_log" 2>&1 &
side_pid=$!
# Stop the other lane if this script is interrupted (by its pid, never by name).
trap 'kill "$side_pid" 2>/dev/null; rm -f "$side_log"' INT TERM
echo "== tests on the session's Ray (-m 'cluster and not own_ray'); the others run beside them =="
"$python" -m pytest -q -p no:cacheprovider -m "cluster and not own_ray" --durations=15 "$@"
cluster_status=$?
[ "$cluster_status" -eq 5 ] && cluster_status=0  # arguments that select none of them
ray_lane_done=$SECONDS
wait "$side_pid"
side_status=$?
# CI's time is the longer lane's: say when the other one outgrows this one.
echo "== the session's Ray lane waited $((SECONDS - ray_lane_done)) s for the other lane =="
echo "== tests without Ray (-m 'not cluster'), then those with a Ray of their own (-m own_ray) =="
cat "$side_log"
rm -f "$side_log"
echo "== the session's Ray lane: exit $cluster_status; the other lane: exit $side_status =="
[ "$cluster_status" -eq 0 ] && [ "$side_status" -eq 0 ]
