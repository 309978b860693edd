"""Decoding audio and video with the system ``ffmpeg`` and ``ffprobe`` programs.

Both come with the Debian/Ubuntu package ``ffmpeg``. They run as subprocesses,
so any container and codec that the installed ffmpeg reads works here (FLV,
MP4, WAV and others).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np

from modalbalance.errors import DataError, ModalBalanceError

logger = logging.getLogger(__name__)

INSTALL_HINT = "install it with: apt-get install ffmpeg (Debian/Ubuntu) or your package manager"
# Generous: decoding one 10 s clip takes well under a second, but a network file system can stall.
DEFAULT_TIMEOUT_S = 300.0


class FFmpegNotFoundError(ModalBalanceError):
    """The ``ffmpeg`` or ``ffprobe`` program is not on the PATH."""


class MediaError(DataError):
    """A media file that is missing, unreadable, truncated or empty."""


def find_program(name: str = "ffmpeg") -> str:
    """Return the path of ``ffmpeg`` or ``ffprobe``, or raise FFmpegNotFoundError with the install command."""
    path = shutil.which(name)
    if path is None:
        raise FFmpegNotFoundError(f"{name} not found; {INSTALL_HINT}")
    return path


def _run(program: str, arguments: list[str], media: Path, timeout_s: float) -> subprocess.CompletedProcess:
    command = [find_program(program), "-nostdin", "-hide_banner", "-loglevel", "error", *arguments]
    if program == "ffprobe":
        # ffprobe has no -nostdin option.
        command.remove("-nostdin")
    try:
        completed = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise MediaError(f"{program} timed out after {timeout_s:.0f} s on {media}") from None
    if completed.returncode != 0:
        raise MediaError(f"{program} failed on {media}: {_last_line(completed.stderr)}")
    return completed


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def _check_source(path: Path) -> None:
    if not path.is_file():
        raise MediaError(f"media file not found: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"media file is empty (0 bytes): {path}")


def probe_duration(path: str | Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
    """Return the duration in seconds of the first video stream of ``path``, or of the container.

    The video stream's own duration is preferred because a container can be
    longer than its video when the audio track runs on. FLV files usually
    declare only the container duration. Raises MediaError when the file is
    missing, empty or declares no duration. A truncated file may still declare
    its original duration.
    """
    path = Path(path)
    _check_source(path)
    arguments = ["-select_streams", "v:0", "-show_entries", "stream=duration:format=duration", "-of", "json", str(path)]
    completed = _run("ffprobe", arguments, path, timeout_s)
    try:
        probed = json.loads(completed.stdout.decode("utf-8", errors="replace") or "{}")
    except json.JSONDecodeError:
        raise MediaError(f"ffprobe returned unreadable output for {path}") from None

    candidates = [stream.get("duration") for stream in probed.get("streams", [])[:1]]
    candidates.append(probed.get("format", {}).get("duration"))
    for text in candidates:
        try:
            duration = float(text)
        except (TypeError, ValueError):
            continue
        if math.isfinite(duration) and duration > 0:
            return duration
    raise MediaError(f"ffprobe found no positive duration in {path}")


def decode_audio(
    path: str | Path,
    sample_rate: int,
    start_s: float | None = None,
    duration_s: float | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> np.ndarray:
    """Decode the audio of ``path`` to a mono float32 waveform in [-1, 1] at ``sample_rate`` Hz.

    ``start_s`` and ``duration_s`` select a segment. ffmpeg mixes multi-channel
    audio down to mono and resamples. Raises MediaError for a missing, empty or
    unreadable file, or one without any audio samples in the segment.
    """
    path = Path(path)
    _check_source(path)
    arguments: list[str] = []
    if start_s is not None:
        arguments += ["-ss", f"{start_s:.3f}"]
    if duration_s is not None:
        arguments += ["-t", f"{duration_s:.3f}"]
    arguments += ["-i", str(path), "-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"]
    completed = _run("ffmpeg", arguments, path, timeout_s)
    if completed.stderr.strip():
        logger.debug("ffmpeg reported errors but decoded %s: %s", path, _last_line(completed.stderr))

    waveform = np.frombuffer(completed.stdout, dtype="<f4").astype(np.float32)
    if waveform.size == 0:
        raise MediaError(f"no audio samples decoded from {path}")
    return np.clip(waveform, -1.0, 1.0)


def frame_rate_for(duration_s: float, fps: float, min_frames: int) -> float:
    """Return the extraction rate: ``fps``, or faster when the clip is too short for ``min_frames`` frames."""
    return max(fps, min_frames / duration_s)


def extract_frames(
    path: str | Path,
    out_dir: str | Path,
    fps: float = 1.0,
    min_frames: int = 10,
    size: int = 224,
    start_s: float | None = None,
    duration_s: float | None = None,
    jpeg_quality: int = 2,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> int:
    """Write frames of ``path`` as ``out_dir/frame_000.jpg``, ``frame_001.jpg``, ...; return how many.

    Frames are taken at ``frame_rate_for(duration, fps, min_frames)`` frames per
    second from the segment (``start_s``, ``duration_s``) or the whole video, and
    resized to ``size`` x ``size`` without keeping the aspect ratio.
    ``jpeg_quality`` is ffmpeg's ``-q:v`` (2 best, 31 worst). Raises MediaError
    for an unreadable video, and for a truncated one: fewer frames than the
    declared duration implies, allowing one frame for rounding at the end.
    """
    path = Path(path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if duration_s is None:
        available_s = probe_duration(path, timeout_s) - (start_s or 0.0)
        if available_s <= 0:
            raise MediaError(f"{path} ends before the segment start {start_s} s")
        duration_s = available_s
    else:
        _check_source(path)
    rate = frame_rate_for(duration_s, fps, min_frames)

    arguments: list[str] = []
    if start_s is not None:
        arguments += ["-ss", f"{start_s:.3f}"]
    arguments += ["-t", f"{duration_s:.3f}", "-i", str(path), "-an"]
    arguments += ["-vf", f"fps={rate:.6f},scale={size}:{size}", "-q:v", str(jpeg_quality)]
    # Zero-padded names from 0, so that sorted file names are in time order.
    arguments += ["-start_number", "0", str(out_dir / "frame_%03d.jpg")]
    _run("ffmpeg", arguments, path, timeout_s)

    num_frames = len(list(out_dir.glob("frame_*.jpg")))
    expected = math.floor(duration_s * rate + 0.5)
    if num_frames == 0:
        raise MediaError(f"no video frames decoded from {path}")
    # NOTE: this truncation check is tested only on ffmpeg-made files cut in half. A real video whose
    # declared duration overstates its frames by more than one frame interval is rejected too.
    if num_frames < expected - 1:
        raise MediaError(f"{path} decodes to {num_frames} frames but its duration implies {expected}; the file is probably truncated")
    return num_frames
