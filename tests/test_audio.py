"""Log spectrograms: shapes of the presets, framing and windowing checked by hand, and ffmpeg audio decoding."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest

from modalbalance.data import media
from modalbalance.data.audio import (
    AVE_SPECTROGRAM,
    CREMAD_SPECTROGRAM,
    FSDD_SPECTROGRAM,
    KINETICS_SOUNDS_SPECTROGRAM,
    LOG_EPSILON,
    SpectrogramParams,
    fit_waveform,
    log_spectrogram,
)
from modalbalance.data.synthetic_media import write_video, write_wav
from modalbalance.errors import ConfigError


@pytest.fixture
def ffmpeg():
    """Skip without ffmpeg, unless MODALBALANCE_REQUIRE_DATA=1 makes that a failure."""
    if shutil.which("ffmpeg") and shutil.which("ffprobe"):
        return
    reason = "ffmpeg/ffprobe not installed (Debian/Ubuntu package: ffmpeg)"
    if os.environ.get("MODALBALANCE_REQUIRE_DATA") == "1":
        pytest.fail(f"{reason}; MODALBALANCE_REQUIRE_DATA=1 makes this a failure")
    pytest.skip(reason)


@pytest.mark.parametrize(
    "params, seconds, shape",
    [
        (CREMAD_SPECTROGRAM, 3.0, (257, 299)),
        (AVE_SPECTROGRAM, 10.05, (257, 1004)),
        (KINETICS_SOUNDS_SPECTROGRAM, 10.05, (257, 1004)),
        (FSDD_SPECTROGRAM, 1.008, (129, 62)),
    ],
)
def test_preset_shapes_and_durations(params, seconds, shape):
    assert params.shape == shape
    assert params.duration_s == pytest.approx(seconds)
    assert log_spectrogram(np.zeros(params.num_samples) + 0.1, params).shape == shape


def test_cremad_preset_is_exactly_three_seconds():
    # 299 frames of 320 samples every 160: 320 + 298 * 160 = 48,000 samples = 3 s at 16 kHz.
    assert CREMAD_SPECTROGRAM.num_samples == 48_000


@pytest.mark.parametrize("length", [1, 1000, 48_000, 100_000])
def test_shape_does_not_depend_on_input_length(length):
    waveform = np.random.default_rng(0).uniform(-0.5, 0.5, size=length)
    spectrogram = log_spectrogram(waveform, CREMAD_SPECTROGRAM)
    assert spectrogram.shape == (257, 299)
    assert spectrogram.dtype == np.float32


def test_fit_tile_repeats_then_crops():
    np.testing.assert_array_equal(fit_waveform(np.array([1.0, 2.0, 3.0]), 7, "tile"), [1, 2, 3, 1, 2, 3, 1])
    np.testing.assert_array_equal(fit_waveform(np.arange(10.0), 4, "tile"), [0, 1, 2, 3])


def test_fit_pad_centers_in_silence():
    np.testing.assert_array_equal(fit_waveform(np.array([1.0, 2.0]), 6, "pad"), [0, 0, 1, 2, 0, 0])
    np.testing.assert_array_equal(fit_waveform(np.array([1.0, 2.0]), 5, "pad"), [0, 1, 2, 0, 0])


def test_fit_pad_crops_around_center():
    np.testing.assert_array_equal(fit_waveform(np.arange(10.0), 4, "pad"), [3, 4, 5, 6])


def test_fit_rejects_empty_waveform():
    with pytest.raises(ValueError, match="non-empty"):
        fit_waveform(np.array([]), 10)


def test_impulse_lands_in_the_frames_that_cover_it():
    # An impulse at sample 1000 lies in frame 5 (samples 800-1119, window offset 200)
    # and frame 6 (960-1279, offset 40). Its spectrum is flat at the window value there.
    waveform = np.zeros(48_000)
    waveform[1000] = 1.0
    spectrogram = log_spectrogram(waveform, CREMAD_SPECTROGRAM)

    hann_200 = 0.5 - 0.5 * math.cos(2 * math.pi * 200 / 320)  # 0.8536
    hann_40 = 0.5 - 0.5 * math.cos(2 * math.pi * 40 / 320)  # 0.1464
    np.testing.assert_allclose(spectrogram[:, 5], math.log(hann_200 + LOG_EPSILON), rtol=1e-5)
    np.testing.assert_allclose(spectrogram[:, 6], math.log(hann_40 + LOG_EPSILON), rtol=1e-5)
    silent = np.delete(spectrogram, [5, 6], axis=1)
    np.testing.assert_allclose(silent, math.log(LOG_EPSILON), rtol=1e-6)


def test_sine_peaks_at_its_frequency_bin():
    # 1 kHz at 16 kHz with a 512-point FFT: bin spacing 31.25 Hz, so bin 32.
    time = np.arange(48_000) / 16_000
    spectrogram = log_spectrogram(0.5 * np.sin(2 * np.pi * 1000 * time), CREMAD_SPECTROGRAM)
    assert np.all(spectrogram.argmax(axis=0) == 32)


def test_silence_is_log_epsilon():
    spectrogram = log_spectrogram(np.zeros(8000), FSDD_SPECTROGRAM)
    np.testing.assert_allclose(spectrogram, math.log(LOG_EPSILON), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window_length": 600}, "must not exceed n_fft"),
        ({"hop_length": 0}, "hop_length must be a positive integer"),
        ({"fit": "loop"}, "fit must be one of tile, pad"),
        ({"num_frames": 2.5}, "num_frames must be a positive integer"),
    ],
)
def test_invalid_params_raise_config_error(kwargs, message):
    arguments = {"sample_rate": 16000, "n_fft": 512, "window_length": 320, "hop_length": 160, "num_frames": 10, **kwargs}
    with pytest.raises(ConfigError, match=message):
        SpectrogramParams(**arguments)


def test_decode_wav_resamples(ffmpeg, tmp_path):
    path = write_wav(tmp_path / "tone.wav", duration_s=1.5, sample_rate=8000, frequency=500.0)
    waveform = media.decode_audio(path, sample_rate=16000)
    assert waveform.dtype == np.float32
    assert abs(waveform.size - 24_000) <= 64
    assert np.abs(waveform).max() <= 1.0


def test_decode_segment_of_video(ffmpeg, tmp_path):
    path = write_video(tmp_path / "clip.mp4", duration_s=4.0, frequency=440.0)
    waveform = media.decode_audio(path, sample_rate=16000, start_s=1.0, duration_s=2.0)
    assert abs(waveform.size - 32_000) <= 1100  # AAC frames of 1024 samples at 44.1 kHz


def test_decode_missing_file_raises(ffmpeg, tmp_path):
    with pytest.raises(media.MediaError, match="media file not found"):
        media.decode_audio(tmp_path / "absent.wav", 16000)


def test_decode_empty_file_raises(ffmpeg, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(media.MediaError, match="empty"):
        media.decode_audio(empty, 16000)


def test_decode_garbage_file_raises(ffmpeg, tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not a wave file at all" * 10)
    with pytest.raises(media.MediaError, match="ffmpeg failed"):
        media.decode_audio(garbage, 16000)


def test_missing_ffmpeg_message(monkeypatch, tmp_path):
    monkeypatch.setattr(media.shutil, "which", lambda name: None)
    with pytest.raises(media.FFmpegNotFoundError) as raised:
        media.decode_audio(write_bytes(tmp_path / "a.wav"), 16000)
    assert str(raised.value) == "ffmpeg not found; install it with: apt-get install ffmpeg (Debian/Ubuntu) or your package manager"


def write_bytes(path):
    path.write_bytes(b"RIFF")
    return path
