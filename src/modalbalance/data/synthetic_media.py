"""Small raw data sets in the real CREMA-D, AVE and Kinetics-Sounds layouts, made with ffmpeg.

The clips are ffmpeg test patterns (``testsrc``) with a sine tone, named and
listed like the real media, so that ``prepare`` and the data sets can be tested
and benchmarked without the real data. The tone frequency differs per clip. Nothing here resembles the real content.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from modalbalance.data.av_lists import AVE_CATEGORIES, CREMAD_EMOTIONS
from modalbalance.data.media import MediaError, find_program


def _ffmpeg(arguments: list[str], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [find_program("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *arguments, str(output)]
    completed = subprocess.run(command, capture_output=True, check=False)
    if completed.returncode != 0:
        raise MediaError(f"ffmpeg failed to write {output}: {completed.stderr.decode(errors='replace').strip()}")


def write_wav(path: str | Path, duration_s: float, sample_rate: int = 16000, frequency: float = 440.0) -> Path:
    """Write a mono 16-bit sine tone."""
    path = Path(path)
    _ffmpeg(["-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate={sample_rate}:duration={duration_s}", "-c:a", "pcm_s16le"], path)
    return path


def write_video(
    path: str | Path,
    duration_s: float,
    width: int = 160,
    height: int = 120,
    frame_rate: int = 15,
    frequency: float | None = 440.0,
) -> Path:
    """Write a ``testsrc`` video, with a sine audio track unless ``frequency`` is None.

    ``.flv`` files get the Sorenson H.263 codec of the CREMA-D videos, with MP3
    audio when the installed ffmpeg has an MP3 encoder and no audio otherwise.
    Other suffixes get MPEG-4 Part 2 video and AAC audio.
    """
    path = Path(path)
    arguments = ["-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate={frame_rate}:duration={duration_s}"]
    flash = path.suffix == ".flv"
    with_audio = frequency is not None and not (flash and not _has_encoder("libmp3lame"))
    if with_audio:
        arguments += ["-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate=44100:duration={duration_s}"]
    arguments += ["-c:v", "flv" if flash else "mpeg4", "-pix_fmt", "yuv420p"]
    arguments += (["-c:a", "libmp3lame" if flash else "aac", "-shortest"] if with_audio else ["-an"])
    _ffmpeg(arguments, path)
    return path


def _has_encoder(name: str) -> bool:
    completed = subprocess.run([find_program("ffmpeg"), "-hide_banner", "-encoders"], capture_output=True, check=False)
    return f" {name} " in completed.stdout.decode(errors="replace")


def truncate_file(path: str | Path, fraction: float = 0.5) -> Path:
    """Cut ``path`` to ``fraction`` of its size, as an interrupted download would."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def cremad_clip_ids(count: int, first_actor: int = 1001) -> list[str]:
    """Return ``count`` distinct clip ids in the CREMA-D pattern ``<actor>_<sentence>_<emotion>_<level>``, cycling emotions."""
    sentences = ("DFA", "IEO", "IOM", "ITH", "ITS", "IWL", "IWW", "MTI", "TAI", "TIE", "TSI", "WSI")
    per_actor = len(sentences) * len(CREMAD_EMOTIONS)
    ids = []
    for index in range(count):
        actor = first_actor + index // per_actor
        sentence = sentences[(index // len(CREMAD_EMOTIONS)) % len(sentences)]
        emotion = CREMAD_EMOTIONS[index % len(CREMAD_EMOTIONS)]
        ids.append(f"{actor}_{sentence}_{emotion}_XX")
    return ids


def write_cremad_raw(
    raw_dir: str | Path,
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    duration_s: float = 3.0,
    copy_first: bool = False,
    video_size: tuple[int, int] = (160, 120),
) -> Path:
    """Write ``AudioWAV/<id>.wav`` (16 kHz), ``VideoFlash/<id>.flv`` and ``train.csv``/``test.csv`` lists.

    The emotion of each clip is the third field of its id. With ``copy_first``
    every clip is a copy of the first one, which is much faster for large counts.
    ``video_size`` is ``(width, height)``; real CREMA-D videos are 480x360.
    """
    raw_dir = Path(raw_dir)
    all_ids = list(train_ids) + list(test_ids)
    for index, clip_id in enumerate(all_ids):
        wav = raw_dir / "AudioWAV" / f"{clip_id}.wav"
        flv = raw_dir / "VideoFlash" / f"{clip_id}.flv"
        if copy_first and index > 0:
            first = all_ids[0]
            wav.parent.mkdir(parents=True, exist_ok=True)
            flv.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(raw_dir / "AudioWAV" / f"{first}.wav", wav)
            shutil.copyfile(raw_dir / "VideoFlash" / f"{first}.flv", flv)
            continue
        write_wav(wav, duration_s, frequency=220.0 + 20.0 * index)
        write_video(flv, duration_s, width=video_size[0], height=video_size[1], frequency=None)
    for name, ids in (("train.csv", train_ids), ("test.csv", test_ids)):
        lines = [f"{clip_id},{clip_id.split('_')[2]}\n" for clip_id in ids]
        (raw_dir / name).write_text("".join(lines))
    return raw_dir


def write_ave_raw(raw_dir: str | Path, splits: dict[str, Sequence[tuple[int, str, int, int]]], video_duration_s: float = 10.0) -> Path:
    """Write ``AVE/<video_id>.mp4`` and the ``trainSet.txt``, ``valSet.txt`` and ``testSet.txt`` lists.

    ``splits`` maps ``train``, ``val`` and ``test`` to ``(category index, video_id, start_s, end_s)`` tuples.
    """
    raw_dir = Path(raw_dir)
    files = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
    written: set[str] = set()
    for split, file_name in files.items():
        lines = []
        for category, video_id, start_s, end_s in splits.get(split, ()):
            lines.append(f"{AVE_CATEGORIES[category]}&{video_id}&good&{start_s}&{end_s}\n")
            if video_id not in written:
                write_video(raw_dir / "AVE" / f"{video_id}.mp4", video_duration_s, frequency=300.0 + 25.0 * len(written))
                written.add(video_id)
        (raw_dir / file_name).write_text("".join(lines))
    return raw_dir


def write_kinetics_sounds_raw(raw_dir: str | Path, splits: dict[str, Sequence[tuple[str, int]]], duration_s: float = 10.0) -> Path:
    """Write ``videos/<clip_id>.mp4`` and the ``my_train.txt``/``my_test.txt`` lists from ``(clip_id, class_index)`` pairs."""
    raw_dir = Path(raw_dir)
    for split, file_name in (("train", "my_train.txt"), ("test", "my_test.txt")):
        lines = []
        for index, (clip_id, class_index) in enumerate(splits.get(split, ())):
            lines.append(f"{clip_id},10,{class_index}\n")
            write_video(raw_dir / "videos" / f"{clip_id}.mp4", duration_s, frequency=350.0 + 30.0 * index)
        (raw_dir / file_name).write_text("".join(lines))
    return raw_dir
