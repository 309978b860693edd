"""Helpers for tests that run the ``modalbalance`` command line in a subprocess."""

import os
import subprocess
import sys


def run_cli(*args, cwd=None):
    """Run ``python -m modalbalance.cli ARGS`` with one thread and no progress bars."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "modalbalance.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=environment, timeout=600)


def assert_one_line_error(result, *fragments):
    """Check a user-error exit: code 2, no traceback, one error line containing every fragment."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0]
