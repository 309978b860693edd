"""The comparison report: config differences, one metrics row per run, embedded curves, and rendering in headless Chromium."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from cli_helpers import run_cli
from matplotlib.image import imread

from modalbalance.analysis.plots import PIXEL_SIZE
from modalbalance.analysis.report import (
    MISSING,
    config_differences,
    flatten,
    write_report,
)
from modalbalance.errors import ConfigError, DataError
from modalbalance.training.runner import train

torch.set_num_threads(1)

FAST = {"epochs": 2, "progress": False, "checkpoint": False}


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    train({"seed": 0, "method": {"name": "pmr"}, "optimizer": {"lr": 0.01}, "train": FAST}, root / "pmr")
    train({"seed": 1, "method": {"name": "naive"}, "optimizer": {"lr": 0.01}, "train": FAST}, root / "naive")
    return [root / "pmr", root / "naive"]


@pytest.fixture(scope="module")
def report(run_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report-out") / "compare.html"
    return write_report(run_dirs, out)


@pytest.fixture(scope="module")
def chromium():
    """Return the Chromium binary; skip, or fail with MODALBALANCE_REQUIRE_DATA=1, when it is not installed."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        reason = "chromium not found; install the Debian packages chromium and chromium-driver"
        if os.environ.get("MODALBALANCE_REQUIRE_DATA") == "1":
            pytest.fail(f"{reason} (MODALBALANCE_REQUIRE_DATA=1 makes this a failure)")
        pytest.skip(reason)
    return binary


def run_chromium(binary, profile, *args):
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def test_flatten_nested_config():
    assert flatten({"a": 1, "b": {"c": {"d": 2}, "e": {}}}) == {"a": 1, "b.c.d": 2, "b.e": {}}


def test_config_differences_keys_only():
    first = {"seed": 0, "method": {"name": "pmr", "alpha": 1.0}, "data": {"modalities": ["a", "b"]}}
    second = {"seed": 0, "method": {"name": "naive"}, "data": {"modalities": ["a", "b"]}, "extra": None}
    differences = dict(config_differences([first, second]))
    assert differences == {"method.name": ["pmr", "naive"], "method.alpha": [1.0, MISSING], "extra": [MISSING, None]}


def test_config_differences_identical_empty():
    config = {"seed": 0, "train": {"epochs": 2}}
    assert config_differences([config, dict(config)]) == []


@pytest.mark.slow
def test_report_files_written(report):
    html_path, markdown_path, *pngs = report
    assert html_path.name == "compare.html"
    assert markdown_path == html_path.with_name("compare.md")
    assert [png.name for png in pngs] == ["compare-test-accuracy.png", "compare-prototype-accuracy.png", "compare-imbalance-ratio.png"]
    for png in pngs:
        assert png.parent == html_path.parent
        image = imread(png)
        assert (image.shape[1], image.shape[0]) == PIXEL_SIZE
        assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 10


@pytest.mark.slow
def test_report_html_contents(report):
    page = report[0].read_text(encoding="utf-8")
    assert page.count('<tr class="run-row">') == 2
    assert page.count('src="data:image/png;base64,') == 3
    # Config differences list the keys that differ, and only those.
    assert "<th>method.name</th>" in page
    assert "<th>seed</th>" in page
    assert "<th>train.epochs</th>" not in page
    assert "<th>optimizer.lr</th>" not in page


@pytest.mark.slow
def test_report_html_self_contained(report):
    page = report[0].read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "http://" not in page
    assert "https://" not in page
    assert not re.search(r'(src|href)="(?!data:)', page)


@pytest.mark.slow
def test_report_markdown_twin(report):
    html_path, markdown_path, *pngs = report
    text = markdown_path.read_text(encoding="utf-8")
    assert "| method.name | pmr | naive |" in text
    assert "| seed | 0 | 1 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| pmr |") or line.startswith("| naive |")]
    assert len(rows) == 4  # two in the runs table, two in the metrics table
    for png in pngs:
        assert f"]({png.name})" in text


@pytest.mark.slow
def test_single_run_report(run_dirs, tmp_path):
    html_path = write_report(run_dirs[:1], tmp_path / "one.html")[0]
    page = html_path.read_text(encoding="utf-8")
    assert page.count('<tr class="run-row">') == 1
    assert "nothing to compare" in page


def test_missing_run_directory_named(tmp_path):
    missing = tmp_path / "no-such-run"
    with pytest.raises(DataError, match="run directory not found") as error:
        write_report([missing], tmp_path / "report.html")
    assert str(missing) in str(error.value)


def test_non_run_directory_named(tmp_path):
    with pytest.raises(DataError, match="not a run directory") as error:
        write_report([tmp_path], tmp_path / "report.html")
    assert str(tmp_path) in str(error.value)


def test_output_must_be_html(tmp_path):
    with pytest.raises(ConfigError, match="must end in .html"):
        write_report([tmp_path], tmp_path / "report.md")


def test_cli_missing_run_one_line_error(tmp_path):
    missing = tmp_path / "gone"
    result = run_cli("report", str(missing), "--out", str(tmp_path / "report.html"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1
    assert str(missing) in error_lines[0]


@pytest.mark.slow
def test_cli_report_writes_page(run_dirs, tmp_path):
    out = tmp_path / "cli" / "report.html"
    result = run_cli("-q", "report", *map(str, run_dirs), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.is_file()
    assert out.with_suffix(".md").is_file()


@pytest.mark.slow
def test_report_renders_in_chromium(chromium, report, tmp_path):
    html_path = report[0]

    dom = run_chromium(chromium, tmp_path / "profile-dom", "--dump-dom", html_path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('class="run-row"') == 2
    assert dom.stdout.count("<img") == 3

    screenshot = tmp_path / "page.png"
    shot = run_chromium(chromium, tmp_path / "profile-shot", "--window-size=1200,1600", f"--screenshot={screenshot}", html_path.as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    image = imread(screenshot)
    assert (image.shape[1], image.shape[0]) == (1200, 1600)
    assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 10
