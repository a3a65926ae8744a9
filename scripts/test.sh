#!/usr/bin/env bash
# Every test, in three lanes at once (what `make test` runs after lint and types):
# the tests that start a real Ray (`-m cluster`: one local Ray per lane, several
# minutes, mostly waiting on it) split in two lanes, each with a Ray of its own, and
# the others (in-process, a few minutes of CPU) beside them. The first Ray lane runs
# in the foreground; the other two print their output when all are done. Exits
# non-zero if any lane failed. Arguments go to every pytest run.
set -uo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python

# The second Ray lane: the long tests that start processes of their own (the cluster
# launcher over SSH, raylets killed, the soak, the fuzzer, the demo, Prometheus), which
# mostly wait on those. Both tests that use port 8000 (the launcher's node, the demo)
# are in it, so they never run at once.
second=(
    tests/cluster/test_launcher.py
    tests/faults/test_process_kills.py
    tests/cluster/test_soak.py
    tests/cluster/test_ingress_fuzz.py
    tests/cluster/test_demo.py
    tests/cluster/test_prometheus.py
    tests/cluster/test_metrics_export.py
    tests/cluster/test_two_nodes.py
    tests/cluster/test_recovery.py
    tests/cluster/test_readiness.py
    tests/cluster/test_secrets.py
)
ignored=()
for path in "${second[@]}"; do ignored+=(--ignore="$path"); done

unit_log=$(mktemp)
second_log=$(mktemp)
# The Ray lanes are the longer ones: the other yields the CPU to them (nice), and
# still ends minutes before them.
nice -n 10 "$python" -m pytest -q -p no:cacheprovider -m "not cluster" "$@" >"$unit_log" 2>&1 &
unit_pid=$!
"$python" -m pytest -q -p no:cacheprovider -m cluster --durations=10 "${second[@]}" "$@" \
    >"$second_log" 2>&1 &
second_pid=$!
# Stop the other lanes if this script is interrupted (by their pids, never by name).
trap 'kill "$unit_pid" "$second_pid" 2>/dev/null; rm -f "$unit_log" "$second_log"' INT TERM
echo "== tests that start Ray (-m cluster), first lane; the others run beside them =="
"$python" -m pytest -q -p no:cacheprovider -m cluster --durations=10 "${ignored[@]}" "$@"
cluster_status=$?
wait "$second_pid"
second_status=$?
wait "$unit_pid"
unit_status=$?
echo "== tests that start Ray (-m cluster), second lane: ${second[*]} =="
cat "$second_log"
echo "== tests without Ray (-m 'not cluster') =="
cat "$unit_log"
rm -f "$unit_log" "$second_log"
echo "== Ray lanes: exit $cluster_status and $second_status; the others: exit $unit_status =="
[ "$cluster_status" -eq 0 ] && [ "$second_status" -eq 0 ] && [ "$unit_status" -eq 0 ]
