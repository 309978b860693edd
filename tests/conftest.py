"""Shared fixtures: the location of the real data sets, skipped or failed when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Return the real data directory: ``$MODALBALANCE_DATA``, else ``<repo>/../shared/data``.

    Tests that use it are skipped when the directory is missing, or fail
    instead when ``MODALBALANCE_REQUIRE_DATA=1`` is set (as on machines that
    are expected to have the data).
    """
    root = Path(os.environ.get("MODALBALANCE_DATA", DEFAULT_DATA_ROOT)).expanduser()
    if not root.is_dir():
        reason = f"real data directory {root} not found; set MODALBALANCE_DATA to the folder that contains mnist/"
        if os.environ.get("MODALBALANCE_REQUIRE_DATA") == "1":
            pytest.fail(f"{reason} (MODALBALANCE_REQUIRE_DATA=1 makes this a failure)")
        pytest.skip(reason)
    return root
