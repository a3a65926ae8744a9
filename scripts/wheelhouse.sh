#!/usr/bin/env bash
# Build .venv/wheelhouse: wheels of ghbot's dependencies at the versions installed in
# .venv (and pip, setuptools), for tests/cluster/test_launcher.py, whose "node"
# installs Ray and ghbot with `pip install --no-index --find-links` from it, so nothing
# is downloaded while the test runs. Downloads from the package index (once: it does
# nothing when the wheelhouse matches .venv). .ci/run calls it after `make install`.
set -euo pipefail
cd "$(dirname "$0")/.."
house=.venv/wheelhouse
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
.venv/bin/python -m pip freeze --exclude-editable >"$constraints"
stamp="$house/.complete-$(cksum <"$constraints" | cut -d' ' -f1)"
if [ -f "$stamp" ]; then
    exit 0
fi
rm -rf "$house"
.venv/bin/python -m pip wheel --quiet --disable-pip-version-check -w "$house" \
    -c "$constraints" . pip setuptools
rm -f "$house"/ghbot-*.whl
touch "$stamp"
