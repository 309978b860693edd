"""Convert raw CREMA-D, AVE and Kinetics-Sounds media into the files the data sets read.

For every clip in the split lists, ``prepare_dataset`` writes

- ``audio/<clip_id>.npy``: the float16 log spectrogram (see ``modalbalance.data.audio``),
- ``frames/<clip_id>/frame_000.jpg`` ...: video frames at 1 fps by default, or
  faster for clips shorter than ``min_frames`` seconds, resized to a square,
- ``done/<clip_id>.json``: written last, marks the clip as complete.

and, for the whole directory, ``prepare.json`` (the settings), ``splits/`` (copies
of the split lists) and ``prepare_report.json`` (counts and failed clips).

Each clip is built in ``.tmp/`` and moved into place, so an interrupted run
leaves no half-written clip behind, and a re-run skips every clip that has a
done marker. A missing, corrupt or truncated media file fails only its clip:
it is logged and listed in the report, and the rest of the job goes on.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from modalbalance.data import media
from modalbalance.data.audio import AVE_SPECTROGRAM, CREMAD_SPECTROGRAM, KINETICS_SOUNDS_SPECTROGRAM, SpectrogramParams, log_spectrogram
from modalbalance.data.av_lists import LIST_FILES, ListEntry, list_path, read_list
from modalbalance.errors import ConfigError, DataError
from modalbalance.registry import unknown_choice_message

logger = logging.getLogger(__name__)

PREPARE_FORMAT_VERSION = 1
INFO_FILE = "prepare.json"
REPORT_FILE = "prepare_report.json"
# An annotated segment shorter than this is widened from its start. The AVE
# training list has one line with start = end = 0 (video VWi2ENBuTbw).
MIN_SEGMENT_S = 1.0
# Failed clips logged one by one; the rest are only counted in the log and listed in the report.
MAX_LOGGED_FAILURES = 20


@dataclass(frozen=True)
class RawLayout:
    """Media folders and file suffixes of one data set inside ``--raw``.

    ``audio_dir`` is None when the audio track is read from the video file.
    """

    video_dir: str
    video_suffix: str
    spectrogram: SpectrogramParams
    audio_dir: str | None = None
    audio_suffix: str | None = None


LAYOUTS = {
    "cremad": RawLayout(
        video_dir="VideoFlash", video_suffix=".flv", spectrogram=CREMAD_SPECTROGRAM, audio_dir="AudioWAV", audio_suffix=".wav"
    ),
    "ave": RawLayout(video_dir="AVE", video_suffix=".mp4", spectrogram=AVE_SPECTROGRAM),
    "kinetics-sounds": RawLayout(video_dir="videos", video_suffix=".mp4", spectrogram=KINETICS_SOUNDS_SPECTROGRAM),
}
DATASET_NAMES = tuple(LAYOUTS)


@dataclass(frozen=True)
class FrameSettings:
    """Frame extraction settings: ``fps`` frames per second, at least ``min_frames`` per clip, ``size`` pixels square."""

    fps: float = 1.0
    min_frames: int = 10
    size: int = 224
    jpeg_quality: int = 2

    def validate(self) -> None:
        if not self.fps > 0:
            raise ConfigError(f"fps must be positive; got {self.fps!r}")
        for name in ("min_frames", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer; got {value!r}")
        if not 2 <= self.jpeg_quality <= 31:
            raise ConfigError(f"jpeg_quality must be from 2 (best) to 31 (worst); got {self.jpeg_quality!r}")


@dataclass(frozen=True)
class ClipJob:
    """Everything a worker process needs to prepare one clip."""

    clip_id: str
    video_path: Path
    audio_path: Path
    start_s: float | None
    duration_s: float | None
    out_dir: Path
    spectrogram: SpectrogramParams
    frames: FrameSettings


@dataclass
class ClipResult:
    clip_id: str
    ok: bool
    error: str | None = None
    num_frames: int = 0


@dataclass
class PrepareReport:
    """Outcome of one ``prepare_dataset`` run, written to ``prepare_report.json``."""

    dataset: str
    raw_dir: str
    out_dir: str
    clips_listed: int = 0
    prepared: int = 0
    already_prepared: int = 0
    failures: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0
    workers: int = 1

    @property
    def failed(self) -> int:
        return len(self.failures)

    def to_dict(self) -> dict:
        return {**asdict(self), "failed": self.failed}


def prepare_dataset(
    dataset: str,
    raw_dir: str | Path,
    out_dir: str | Path,
    splits_dir: str | Path | None = None,
    workers: int = 1,
    frames: FrameSettings = FrameSettings(),
    progress: bool | None = None,
) -> PrepareReport:
    """Prepare every clip listed in ``dataset``'s split lists and return the report.

    ``splits_dir`` contains the split lists and defaults to ``raw_dir``.
    ``workers`` is the number of worker processes; 1 runs in this process.
    ``progress`` shows a tqdm bar: None shows it only on a terminal.
    Raises ConfigError for invalid arguments, DataError when ``raw_dir``, a list
    or a media folder is missing or ``out_dir`` contains data prepared with other
    settings, and FFmpegNotFoundError without ffmpeg. Failed clips do not raise.
    """
    if dataset not in LAYOUTS:
        raise ConfigError(unknown_choice_message("dataset", dataset, list(DATASET_NAMES)))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer; got {workers!r}")
    frames.validate()
    layout = LAYOUTS[dataset]
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    splits_dir = Path(splits_dir) if splits_dir is not None else raw_dir
    _check_raw_dir(dataset, layout, raw_dir)
    lists = {split: list_path(splits_dir, dataset, split) for split in LIST_FILES[dataset]}
    media.find_program("ffmpeg")
    media.find_program("ffprobe")

    started = time.monotonic()
    _claim_out_dir(dataset, layout, frames, out_dir)
    _copy_lists(lists, out_dir / "splits")
    entries = _unique_clips(dataset, lists)
    done = _done_clip_ids(out_dir)
    jobs = [_make_job(entry, layout, raw_dir, out_dir, frames) for entry in entries if entry.clip_id not in done]
    report = PrepareReport(
        dataset=dataset,
        raw_dir=str(raw_dir),
        out_dir=str(out_dir),
        clips_listed=len(entries),
        already_prepared=len(entries) - len(jobs),
        workers=workers,
    )
    logger.info(
        "preparing %d %s clips from %s into %s with %d worker(s); %d already prepared",
        len(jobs), dataset, raw_dir, out_dir, workers, report.already_prepared,
    )

    with logging_redirect_tqdm():
        for result in _run_jobs(jobs, workers, progress, description=f"prepare {dataset}"):
            if result.ok:
                report.prepared += 1
                continue
            report.failures.append({"clip_id": result.clip_id, "error": result.error})
            if report.failed <= MAX_LOGGED_FAILURES:
                logger.warning("skipped clip %s: %s", result.clip_id, result.error)

    shutil.rmtree(out_dir / ".tmp", ignore_errors=True)
    report.failures.sort(key=lambda failure: failure["clip_id"])
    report.elapsed_s = round(time.monotonic() - started, 3)
    _write_json_atomically(out_dir / REPORT_FILE, report.to_dict())
    _log_summary(report)
    return report


def _check_raw_dir(dataset: str, layout: RawLayout, raw_dir: Path) -> None:
    if not raw_dir.is_dir():
        raise DataError(f"raw {dataset} directory not found: {raw_dir}; pass --raw pointing at the folder containing {layout.video_dir}/")
    for folder in (layout.video_dir, layout.audio_dir):
        if folder is not None and not (raw_dir / folder).is_dir():
            raise DataError(f"{raw_dir / folder} not found; --raw must be the {dataset} folder containing {folder}/")


def settings_dict(dataset: str, layout: RawLayout, frames: FrameSettings) -> dict:
    """Return the content of ``prepare.json``: what the loaders need to know about the prepared files."""
    return {
        "format_version": PREPARE_FORMAT_VERSION,
        "dataset": dataset,
        "spectrogram": layout.spectrogram.to_dict(),
        "spectrogram_shape": list(layout.spectrogram.shape),
        "frames": asdict(frames),
    }


def _claim_out_dir(dataset: str, layout: RawLayout, frames: FrameSettings, out_dir: Path) -> None:
    """Create ``out_dir`` and its ``prepare.json``, or check that an existing one used the same settings."""
    settings = settings_dict(dataset, layout, frames)
    info_path = out_dir / INFO_FILE
    if info_path.is_file():
        existing = read_prepare_info(out_dir)
        if existing != settings:
            raise DataError(
                f"{out_dir} already contains {existing.get('dataset')!r} clips prepared with other settings "
                f"({info_path}); pass a new --out or the options of the first run"
            )
    for folder in ("audio", "frames", "done", "splits", ".tmp"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    _write_json_atomically(info_path, settings)


def read_prepare_info(root: str | Path) -> dict:
    """Return the ``prepare.json`` of a prepared directory, or raise DataError when it is missing or invalid."""
    path = Path(root) / INFO_FILE
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{path} not found; {root} is not a prepared directory, so run 'modalbalance prepare' on the raw data first") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON ({error}); run 'modalbalance prepare' again with a new --out") from None


def _copy_lists(lists: dict[str, Path], destination: Path) -> None:
    for source in lists.values():
        target = destination / source.name
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)


def _unique_clips(dataset: str, lists: dict[str, Path]) -> list[ListEntry]:
    """Return the listed clips in list order, each clip once, although AVE lists some videos twice."""
    unique: dict[str, ListEntry] = {}
    for path in lists.values():
        for entry in read_list(dataset, path):
            unique.setdefault(entry.clip_id, entry)
    return list(unique.values())


def _done_clip_ids(out_dir: Path) -> set[str]:
    return {name[: -len(".json")] for name in os.listdir(out_dir / "done") if name.endswith(".json")}


def _make_job(entry: ListEntry, layout: RawLayout, raw_dir: Path, out_dir: Path, frames: FrameSettings) -> ClipJob:
    video_path = raw_dir / layout.video_dir / f"{entry.video}{layout.video_suffix}"
    audio_path = video_path
    if layout.audio_dir is not None:
        audio_path = raw_dir / layout.audio_dir / f"{entry.video}{layout.audio_suffix}"

    duration_s = None
    if entry.start_s is not None and entry.end_s is not None:
        duration_s = max(entry.end_s - entry.start_s, MIN_SEGMENT_S)
    return ClipJob(
        clip_id=entry.clip_id,
        video_path=video_path,
        audio_path=audio_path,
        start_s=entry.start_s,
        duration_s=duration_s,
        out_dir=out_dir,
        spectrogram=layout.spectrogram,
        frames=frames,
    )


def _run_jobs(jobs: list[ClipJob], workers: int, progress: bool | None, description: str):
    """Yield one ClipResult per job, in completion order, while a tqdm bar counts them."""
    bar = tqdm(total=len(jobs), desc=description, unit="clip", disable=None if progress is None else not progress)
    with bar:
        if workers == 1:
            for job in jobs:
                yield prepare_clip(job)
                bar.update()
            return

        context = _worker_context()
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(prepare_clip, job): job.clip_id for job in jobs}
            try:
                for future in concurrent.futures.as_completed(futures):
                    try:
                        result = future.result()
                    except concurrent.futures.process.BrokenProcessPool as error:
                        result = ClipResult(futures[future], ok=False, error=f"worker process died: {error}")
                    yield result
                    bar.update()
            except BaseException:
                # Interrupted (Ctrl-C) or the consumer stopped: do not start the clips still queued.
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def _worker_context() -> multiprocessing.context.BaseContext:
    """Return a forkserver context that has imported this module, or spawn where forkserver is missing (Windows).

    A forkserver imports the package once and forks every worker from that
    state. Importing ``modalbalance.data`` also imports torch (about 2 s), which
    spawned workers would each repeat. Plain fork is avoided because the
    caller may be running threads (tqdm's monitor, DataLoader threads).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def prepare_clip(job: ClipJob) -> ClipResult:
    """Prepare one clip; return a failed ClipResult instead of raising, so that one bad file cannot stop the job."""
    scratch = job.out_dir / ".tmp" / f"{job.clip_id}.{os.getpid()}"
    try:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        waveform = media.decode_audio(job.audio_path, job.spectrogram.sample_rate, job.start_s, job.duration_s)
        spectrogram = log_spectrogram(waveform, job.spectrogram)
        with open(scratch / "audio.npy", "wb") as handle:
            np.save(handle, spectrogram.astype(np.float16))

        num_frames = media.extract_frames(
            job.video_path,
            scratch / "frames",
            fps=job.frames.fps,
            min_frames=job.frames.min_frames,
            size=job.frames.size,
            start_s=job.start_s,
            duration_s=job.duration_s,
            jpeg_quality=job.frames.jpeg_quality,
        )

        # Move the finished clip into place; the done marker goes last, so a clip with a marker is complete.
        frames_dir = job.out_dir / "frames" / job.clip_id
        if frames_dir.exists():
            shutil.rmtree(frames_dir)  # left by an interrupted run, which wrote no done marker
        os.replace(scratch / "audio.npy", job.out_dir / "audio" / f"{job.clip_id}.npy")
        os.rename(scratch / "frames", frames_dir)
        marker = {"num_frames": num_frames, "spectrogram_shape": list(spectrogram.shape)}
        _write_json_atomically(job.out_dir / "done" / f"{job.clip_id}.json", marker, scratch / "done.json")
        return ClipResult(job.clip_id, ok=True, num_frames=num_frames)
    except (media.MediaError, OSError) as error:
        return ClipResult(job.clip_id, ok=False, error=str(error))
    except Exception as error:  # noqa: BLE001 - an unexpected decoder problem must not stop the other clips
        return ClipResult(job.clip_id, ok=False, error=f"{type(error).__name__}: {error}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_json_atomically(path: Path, content: dict, scratch: Path | None = None) -> None:
    scratch = scratch or path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(scratch, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2)
        handle.write("\n")
    os.replace(scratch, path)


def _log_summary(report: PrepareReport) -> None:
    logger.info(
        "%s: %d clips listed, %d prepared now, %d already prepared, %d failed, in %.1f s",
        report.dataset, report.clips_listed, report.prepared, report.already_prepared, report.failed, report.elapsed_s,
    )
    if report.failed:
        logger.warning(
            "%d %s clips failed and were skipped (%d logged above); the full list is in %s",
            report.failed, report.dataset, min(report.failed, MAX_LOGGED_FAILURES), Path(report.out_dir) / REPORT_FILE,
        )
