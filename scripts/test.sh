#!/usr/bin/env bash
# Set up .venv with the test tools and run the test suite. Extra arguments go to pytest.
# Real-data tests read MODALBALANCE_DATA (default ../shared/data) and skip when it is
# absent, unless MODALBALANCE_REQUIRE_DATA=1, which turns those skips into failures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
