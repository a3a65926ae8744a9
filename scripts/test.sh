#!/usr/bin/env bash
# Every test, in two lanes at once (what `make test` runs after lint and types):
# the tests that start a real Ray (`-m cluster`: one Ray for the session, several
# minutes, mostly waiting on it) in the foreground, and the others (in-process, a few
# minutes of CPU) beside them, their output shown when both are done. Exits non-zero
# if either lane failed. Arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
unit_log=$(mktemp)
# The Ray lane is the longer one: the other yields the CPU to it (nice), and still
# ends minutes before it.
nice -n 10 "$python" -m pytest -q -p no:cacheprovider -m "not cluster" "$@" >"$unit_log" 2>&1 &
unit_pid=$!
# Stop the other lane if this script is interrupted (by its pid, never by name).
trap 'kill "$unit_pid" 2>/dev/null; rm -f "$unit_log"' INT TERM
echo "== tests that start Ray (-m cluster); the others run beside them =="
"$python" -m pytest -q -p no:cacheprovider -m cluster --durations=15 "$@"
cluster_status=$?
wait "$unit_pid"
unit_status=$?
echo "== tests without Ray (-m 'not cluster') =="
cat "$unit_log"
rm -f "$unit_log"
echo "== cluster lane: exit $cluster_status; the others: exit $unit_status =="
[ "$cluster_status" -eq 0 ] && [ "$unit_status" -eq 0 ]
