"""``prepare``: raw media in the real layouts, made with ffmpeg, to spectrograms, frames and a report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modalbalance.commands import prepare as prepare_command
from modalbalance.data import media
from modalbalance.data.prepare import REPORT_FILE, FrameSettings, prepare_dataset, read_prepare_info
from modalbalance.data.synthetic_media import (
    cremad_clip_ids,
    truncate_file,
    write_ave_raw,
    write_cremad_raw,
    write_kinetics_sounds_raw,
    write_video,
)
from modalbalance.errors import ConfigError, DataError

SMALL_FRAMES = FrameSettings(fps=1.0, min_frames=10, size=32)


def require_ffmpeg() -> None:
    """Skip without ffmpeg, unless MODALBALANCE_REQUIRE_DATA=1 makes that a failure."""
    if shutil.which("ffmpeg") and shutil.which("ffprobe"):
        return
    reason = "ffmpeg/ffprobe not installed (Debian/Ubuntu package: ffmpeg)"
    if os.environ.get("MODALBALANCE_REQUIRE_DATA") == "1":
        pytest.fail(f"{reason}; MODALBALANCE_REQUIRE_DATA=1 makes this a failure")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cremad_raw(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """Six CREMA-D clips (four train, two test); one video is truncated and one audio file is empty."""
    require_ffmpeg()
    raw = tmp_path_factory.mktemp("cremad_raw")
    ids = cremad_clip_ids(6)
    train_ids, test_ids = ids[:4], ids[4:]
    write_cremad_raw(raw, train_ids, test_ids, duration_s=2.5)
    truncate_file(raw / "VideoFlash" / f"{train_ids[1]}.flv")
    (raw / "AudioWAV" / f"{test_ids[0]}.wav").write_bytes(b"")
    return raw, train_ids, test_ids


@pytest.fixture(scope="module")
def cremad_prepared(cremad_raw, tmp_path_factory):
    raw, train_ids, test_ids = cremad_raw
    out = tmp_path_factory.mktemp("cremad_out")
    report = prepare_dataset("cremad", raw, out, workers=2, frames=SMALL_FRAMES, progress=False)
    return out, report


def test_cremad_counts(cremad_prepared):
    _, report = cremad_prepared
    assert report.clips_listed == 6
    assert report.prepared == 4
    assert report.already_prepared == 0
    assert report.failed == 2


def test_cremad_failures_named(cremad_raw, cremad_prepared):
    _, train_ids, test_ids = cremad_raw
    _, report = cremad_prepared
    errors = {failure["clip_id"]: failure["error"] for failure in report.failures}
    assert set(errors) == {train_ids[1], test_ids[0]}
    assert "truncated" in errors[train_ids[1]]
    assert "empty" in errors[test_ids[0]]


def test_report_file_matches_report(cremad_prepared):
    out, report = cremad_prepared
    written = json.loads((out / REPORT_FILE).read_text())
    assert written == report.to_dict()
    assert written["failed"] == 2


def test_spectrogram_files(cremad_raw, cremad_prepared):
    out, _ = cremad_prepared
    clip_id = cremad_raw[1][0]
    spectrogram = np.load(out / "audio" / f"{clip_id}.npy")
    assert spectrogram.shape == (257, 299)
    assert spectrogram.dtype == np.float16
    assert np.isfinite(spectrogram.astype(np.float32)).all()


def test_frame_files(cremad_raw, cremad_prepared):
    out, _ = cremad_prepared
    clip_id = cremad_raw[1][0]
    # A 2.5 s clip is shorter than min_frames (10) seconds, so it is sampled at 4 fps.
    frames = sorted((out / "frames" / clip_id).iterdir())
    assert [frame.name for frame in frames] == [f"frame_{i:03d}.jpg" for i in range(10)]
    with Image.open(frames[0]) as image:
        assert image.size == (32, 32)
        assert image.mode == "RGB"


def test_done_markers_only_for_prepared(cremad_raw, cremad_prepared):
    out, report = cremad_prepared
    done = sorted(path.stem for path in (out / "done").iterdir())
    failed = {failure["clip_id"] for failure in report.failures}
    assert done == sorted(set(cremad_raw[1] + cremad_raw[2]) - failed)
    for clip_id in failed:
        assert not (out / "audio" / f"{clip_id}.npy").exists()
        assert not (out / "frames" / clip_id).exists()


def test_no_scratch_left(cremad_prepared):
    out, _ = cremad_prepared
    assert not (out / ".tmp").exists()


def test_lists_and_settings_copied(cremad_prepared):
    out, _ = cremad_prepared
    assert (out / "splits" / "train.csv").is_file()
    assert (out / "splits" / "test.csv").is_file()
    info = read_prepare_info(out)
    assert info["dataset"] == "cremad"
    assert info["spectrogram_shape"] == [257, 299]
    assert info["frames"]["size"] == 32


def test_rerun_skips_finished_clips(cremad_raw, cremad_prepared):
    out, _ = cremad_prepared
    clip_id = cremad_raw[1][0]
    spectrogram = out / "audio" / f"{clip_id}.npy"
    modified = spectrogram.stat().st_mtime_ns

    report = prepare_dataset("cremad", cremad_raw[0], out, workers=1, frames=SMALL_FRAMES, progress=False)
    assert report.prepared == 0
    assert report.already_prepared == 4
    assert report.failed == 2
    assert spectrogram.stat().st_mtime_ns == modified


def test_rerun_retries_repaired_clip(cremad_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(cremad_raw[0], raw)
    out = tmp_path / "out"
    first = prepare_dataset("cremad", raw, out, workers=1, frames=SMALL_FRAMES, progress=False)
    assert first.failed == 2

    broken = cremad_raw[1][1]
    write_video(raw / "VideoFlash" / f"{broken}.flv", 2.5, frequency=None)
    second = prepare_dataset("cremad", raw, out, workers=1, frames=SMALL_FRAMES, progress=False)
    assert second.prepared == 1
    assert second.already_prepared == 4
    assert [failure["clip_id"] for failure in second.failures] == [cremad_raw[2][0]]


def test_leftover_of_interrupted_run_is_replaced(cremad_raw, tmp_path):
    out = tmp_path / "out"
    clip_id = cremad_raw[1][0]
    stale = out / "frames" / clip_id
    stale.mkdir(parents=True)
    (stale / "frame_099.jpg").write_bytes(b"partial")

    prepare_dataset("cremad", cremad_raw[0], out, workers=1, frames=SMALL_FRAMES, progress=False)
    assert len(list(stale.iterdir())) == 10
    assert not (stale / "frame_099.jpg").exists()


def test_other_settings_on_same_out_raise(cremad_raw, cremad_prepared):
    out, _ = cremad_prepared
    with pytest.raises(DataError, match="other settings"):
        prepare_dataset("cremad", cremad_raw[0], out, frames=FrameSettings(size=64), progress=False)


def test_summary_logged(cremad_raw, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="modalbalance.data.prepare"):
        prepare_dataset("cremad", cremad_raw[0], tmp_path / "out", workers=1, frames=SMALL_FRAMES, progress=False)
    assert "6 clips listed, 4 prepared now, 0 already prepared, 2 failed" in caplog.text
    assert "prepare_report.json" in caplog.text


def test_missing_raw_dir_raises(tmp_path):
    with pytest.raises(DataError, match="raw cremad directory not found"):
        prepare_dataset("cremad", tmp_path / "absent", tmp_path / "out")


def test_missing_media_folder_raises(tmp_path):
    (tmp_path / "AudioWAV").mkdir()
    with pytest.raises(DataError, match="VideoFlash not found"):
        prepare_dataset("cremad", tmp_path, tmp_path / "out")


def test_missing_list_raises(tmp_path):
    (tmp_path / "AudioWAV").mkdir()
    (tmp_path / "VideoFlash").mkdir()
    with pytest.raises(DataError, match="train list not found"):
        prepare_dataset("cremad", tmp_path, tmp_path / "out")


def test_unknown_dataset_raises(tmp_path):
    with pytest.raises(ConfigError, match="dataset must be one of cremad, ave, kinetics-sounds"):
        prepare_dataset("crema", tmp_path, tmp_path / "out")


def test_invalid_workers_raise(tmp_path):
    with pytest.raises(ConfigError, match="workers"):
        prepare_dataset("cremad", tmp_path, tmp_path / "out", workers=0)


def test_missing_ffmpeg_raises_before_writing(cremad_raw, tmp_path, monkeypatch):
    monkeypatch.setattr(media.shutil, "which", lambda name: None)
    with pytest.raises(media.FFmpegNotFoundError, match="apt-get install ffmpeg"):
        prepare_dataset("cremad", cremad_raw[0], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_splits_option_reads_lists_elsewhere(cremad_raw, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    train_ids = cremad_raw[1][:1]
    (lists / "train.csv").write_text("".join(f"{clip},{clip.split('_')[2]}\n" for clip in train_ids))
    (lists / "test.csv").write_text("")
    report = prepare_dataset("cremad", cremad_raw[0], tmp_path / "out", splits_dir=lists, frames=SMALL_FRAMES, progress=False)
    assert report.clips_listed == 1
    assert report.prepared == 1


# AVE: videos with annotated segments


@pytest.fixture(scope="module")
def ave_prepared(tmp_path_factory):
    require_ffmpeg()
    raw = tmp_path_factory.mktemp("ave_raw")
    splits = {
        # One video listed twice with two categories for one segment, as 45 real AVE videos are.
        "train": [(0, "vidA_aaaaa", 2, 6), (3, "vidA_aaaaa", 2, 6), (5, "vid-B_bbbb", 0, 10)],
        "val": [(1, "vidC_ccccc", 0, 0)],  # start = end, as one real AVE training line has
        "test": [(2, "vidD_ddddd", 7, 10)],
    }
    write_ave_raw(raw, splits)
    out = tmp_path_factory.mktemp("ave_out")
    report = prepare_dataset("ave", raw, out, workers=1, frames=SMALL_FRAMES, progress=False)
    return out, report


def test_ave_duplicate_line_prepared_once(ave_prepared):
    _, report = ave_prepared
    assert report.clips_listed == 4
    assert report.prepared == 4
    assert report.failed == 0


def test_ave_clip_ids_include_segment(ave_prepared):
    out, _ = ave_prepared
    assert sorted(path.stem for path in (out / "done").iterdir()) == [
        "vid-B_bbbb_0_10",
        "vidA_aaaaa_2_6",
        "vidC_ccccc_0_0",
        "vidD_ddddd_7_10",
    ]


def test_ave_spectrogram_shape(ave_prepared):
    out, _ = ave_prepared
    assert np.load(out / "audio" / "vidA_aaaaa_2_6.npy").shape == (257, 1004)


def test_ave_frames_cover_segment(ave_prepared):
    out, _ = ave_prepared
    # A 10 s segment at 1 fps and a 4 s segment raised to 10 frames both give 10 frames.
    assert len(list((out / "frames" / "vid-B_bbbb_0_10").iterdir())) == 10
    assert len(list((out / "frames" / "vidA_aaaaa_2_6").iterdir())) == 10


def test_ave_empty_segment_widened(ave_prepared):
    out, _ = ave_prepared
    marker = json.loads((out / "done" / "vidC_ccccc_0_0.json").read_text())
    assert marker["num_frames"] >= 9


def test_kinetics_sounds_prepare(tmp_path):
    require_ffmpeg()
    raw = write_kinetics_sounds_raw(
        tmp_path / "raw",
        {"train": [("-abcdefghij_000010_000020", 4)], "test": [("Zyxwvu_tsrq_7", 30)]},
        duration_s=3.0,
    )
    report = prepare_dataset("kinetics-sounds", raw, tmp_path / "out", frames=SMALL_FRAMES, progress=False)
    assert report.prepared == 2
    assert np.load(tmp_path / "out" / "audio" / "Zyxwvu_tsrq_7.npy").shape == (257, 1004)


def test_kinetics_sounds_missing_video_reported(tmp_path):
    require_ffmpeg()
    raw = write_kinetics_sounds_raw(tmp_path / "raw", {"train": [("-abcdefghij_000010_000020", 4)]}, duration_s=2.0)
    with open(raw / "my_train.txt", "a") as handle:
        handle.write("notdownload_000001_000011,10,3\n")
    report = prepare_dataset("kinetics-sounds", raw, tmp_path / "out", frames=SMALL_FRAMES, progress=False)
    assert report.prepared == 1
    assert report.failures == [
        {"clip_id": "notdownload_000001_000011", "error": f"media file not found: {raw / 'videos' / 'notdownload_000001_000011.mp4'}"}
    ]


# The command


def parse_prepare_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    prepare_command.add_parser(parser.add_subparsers())
    return parser.parse_args(["prepare", *argv])


def test_command_run_strict_exit_code(cremad_raw, tmp_path):
    args = parse_prepare_args(["cremad", "--raw", str(cremad_raw[0]), "--out", str(tmp_path / "out"), "--workers", "1", "--frame-size", "32"])
    assert args.func is prepare_command.run
    assert prepare_command.run(args) == 0
    args.strict = True
    assert prepare_command.run(args) == 1


def test_cli_subprocess(cremad_raw, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "modalbalance.cli", "prepare", "cremad", "--raw", str(cremad_raw[0]), "--out", str(out)]
    completed = subprocess.run([*command, "--workers", "2", "--frame-size", "32"], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "2 failed" in completed.stderr
    assert json.loads((out / REPORT_FILE).read_text())["prepared"] == 4


def test_cli_without_ffmpeg_is_one_line_error(cremad_raw, tmp_path):
    environment = {**os.environ, "PATH": str(tmp_path / "empty-path")}
    command = [sys.executable, "-m", "modalbalance.cli", "prepare", "cremad", "--raw", str(cremad_raw[0]), "--out", str(tmp_path / "out")]
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "modalbalance prepare: error: ffmpeg not found; install it with: apt-get install ffmpeg (Debian/Ubuntu) or your package manager"
    ]
