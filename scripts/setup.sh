#!/usr/bin/env bash
# Create .venv (if needed) and install modalbalance into it.
#   bash scripts/setup.sh          the library and CLI
#   bash scripts/setup.sh --test   plus the test tools and the Debian packages the tests use
# PyTorch: an already installed torch inside the supported range is kept. Otherwise
# torch==2.13.0 is installed; set TORCH_INDEX_URL (for example PyTorch's CPU wheel
# index) to choose where pip looks for it.
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[[ "${1:-}" == "--test" ]] && with_tests=1

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

if ! .venv/bin/python -c 'import torch, sys; v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(0 if (2, 1) <= v < (2, 14) else 1)' 2>/dev/null; then
    if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
        "${pip[@]}" install --index-url "$TORCH_INDEX_URL" torch==2.13.0
    else
        "${pip[@]}" install torch==2.13.0
    fi
fi

if [[ $with_tests -eq 1 ]]; then
    "${pip[@]}" install -e '.[test,tensorboard]'
    bash scripts/install-system-packages.sh
else
    "${pip[@]}" install -e .
fi
