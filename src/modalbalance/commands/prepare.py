"""``modalbalance prepare``: turn raw CREMA-D, AVE or Kinetics-Sounds media into spectrograms and frames."""

from __future__ import annotations

import argparse
import os

DATASETS = ("cremad", "ave", "kinetics-sounds")

EPILOG = """\
expected raw layouts (--raw):
  cremad           AudioWAV/<clip>.wav, VideoFlash/<clip>.flv; lists train.csv, test.csv
  ave              AVE/<video_id>.mp4; lists trainSet.txt, valSet.txt, testSet.txt
  kinetics-sounds  videos/<clip>.mp4; lists my_train.txt, my_test.txt

Re-running with the same --out skips the clips already prepared. Clips whose
media are missing or corrupt are skipped and listed in OUT/prepare_report.json.
Needs the ffmpeg and ffprobe programs (Debian/Ubuntu package: ffmpeg).
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="convert raw audio-visual media into the files the data sets read",
        description="Write a log spectrogram and JPEG frames for every clip in the split lists of one data set.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", choices=DATASETS, help="data set whose layout and lists --raw contains")
    parser.add_argument("--raw", required=True, metavar="DIR", help="directory of the raw media (see the layouts below)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory; use it as data.root when training")
    parser.add_argument("--splits", metavar="DIR", help="directory of the split lists (default: --raw)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, metavar="N", help="worker processes (default: the number of CPUs)"
    )
    parser.add_argument("--fps", type=float, default=1.0, help="video frames extracted per second (default: 1)")
    parser.add_argument(
        "--min-frames",
        type=int,
        default=10,
        metavar="N",
        help="frames per clip at least; shorter clips are sampled faster than --fps (default: 10)",
    )
    parser.add_argument("--frame-size", type=int, default=224, metavar="PIXELS", help="side of the square frames (default: 224)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when any clip failed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prepare the data set; return 0, or 1 with --strict when some clips failed."""
    from pathlib import Path

    from modalbalance.data.prepare import FrameSettings, prepare_dataset
    from modalbalance.errors import ConfigError

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out} exists and is not a directory; choose another output directory")
    frames = FrameSettings(fps=args.fps, min_frames=args.min_frames, size=args.frame_size)
    report = prepare_dataset(
        args.dataset,
        raw_dir=args.raw,
        out_dir=args.out,
        splits_dir=args.splits,
        workers=args.workers,
        frames=frames,
    )
    return 1 if args.strict and report.failed else 0
