"""Log-magnitude spectrograms of fixed size for the audio encoders.

A waveform is first fitted to exactly ``SpectrogramParams.num_samples`` samples
(tiled or padded, then cropped), and then framed with a Hann window of
``window_length`` samples every ``hop_length`` samples, without padding the
signal at the edges. Each frame is zero-padded to an ``n_fft``-point FFT. The
result is ``log(|STFT| + 1e-7)`` with ``n_fft // 2 + 1`` frequency bins and
``num_frames`` time frames.

The presets reproduce the input sizes of Fan et al., "PMR", CVPR 2023: 257 x 299
for CREMA-D and 257 x 1004 for AVE. The CREMA-D size covers 3 s at 16 kHz. The
AVE size needs 10.05 s at 16 kHz, the shortest length that gives 1004 frames
with a 10 ms hop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from modalbalance.errors import ConfigError

LOG_EPSILON = 1e-7
FIT_MODES = ("tile", "pad")


@dataclass(frozen=True)
class SpectrogramParams:
    """STFT settings and the fixed output size of one data set's spectrograms.

    Attributes:
        sample_rate: waveform rate in Hz that the other lengths are counted in.
        n_fft: FFT size; the output has ``n_fft // 2 + 1`` frequency bins.
        window_length: Hann window length in samples, at most ``n_fft``.
        hop_length: samples between the starts of consecutive frames.
        num_frames: time frames of the output; fixes the waveform length.
        fit: ``"tile"`` repeats a short waveform until it is long enough (the
            convention of the CREMA-D and AVE baselines); ``"pad"`` centers it in
            silence. A long waveform is cropped from the start (``tile``) or
            around its center (``pad``).
    """

    sample_rate: int
    n_fft: int
    window_length: int
    hop_length: int
    num_frames: int
    fit: str = "tile"

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "window_length", "hop_length", "num_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"spectrogram {name} must be a positive integer; got {value!r}")
        if self.window_length > self.n_fft:
            raise ConfigError(f"spectrogram window_length ({self.window_length}) must not exceed n_fft ({self.n_fft})")
        if self.fit not in FIT_MODES:
            raise ConfigError(f"spectrogram fit must be one of {', '.join(FIT_MODES)}; got {self.fit!r}")

    @property
    def num_samples(self) -> int:
        """Waveform length in samples that yields exactly ``num_frames`` frames."""
        return self.window_length + (self.num_frames - 1) * self.hop_length

    @property
    def num_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def shape(self) -> tuple[int, int]:
        """Output shape ``(frequency bins, time frames)``."""
        return (self.num_bins, self.num_frames)

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate

    def to_dict(self) -> dict:
        return asdict(self)


# 20 ms windows every 10 ms at 16 kHz, each zero-padded to a 512-point FFT.
CREMAD_SPECTROGRAM = SpectrogramParams(sample_rate=16000, n_fft=512, window_length=320, hop_length=160, num_frames=299)
AVE_SPECTROGRAM = SpectrogramParams(sample_rate=16000, n_fft=512, window_length=320, hop_length=160, num_frames=1004)
# Kinetics-Sounds clips are 10 s YouTube excerpts like AVE's, so they get AVE's input size.
KINETICS_SOUNDS_SPECTROGRAM = AVE_SPECTROGRAM
# 32 ms windows every 16 ms at 8 kHz; 62 frames cover 8,064 samples (1.008 s), and clips are centered in silence.
FSDD_SPECTROGRAM = SpectrogramParams(sample_rate=8000, n_fft=256, window_length=256, hop_length=128, num_frames=62, fit="pad")


def fit_waveform(waveform: np.ndarray, num_samples: int, fit: str = "tile") -> np.ndarray:
    """Return ``waveform`` tiled or padded to at least ``num_samples`` samples, then cropped to exactly that many."""
    if waveform.ndim != 1 or waveform.size == 0:
        raise ValueError(f"expected a non-empty 1-D waveform; got shape {waveform.shape}")
    if fit == "tile":
        repeats = -(-num_samples // waveform.size)  # ceiling division
        return np.tile(waveform, repeats)[:num_samples]
    if fit == "pad":
        if waveform.size >= num_samples:
            start = (waveform.size - num_samples) // 2
            return waveform[start : start + num_samples]
        before = (num_samples - waveform.size) // 2
        return np.pad(waveform, (before, num_samples - waveform.size - before))
    raise ValueError(f"fit must be one of {', '.join(FIT_MODES)}; got {fit!r}")


def log_spectrogram(waveform: np.ndarray, params: SpectrogramParams) -> np.ndarray:
    """Return the ``[n_fft // 2 + 1, num_frames]`` float32 log-magnitude spectrogram of a mono waveform.

    The waveform is first fitted to ``params.num_samples`` samples with
    ``fit_waveform``, so any non-empty input length gives the same shape.
    """
    signal = fit_waveform(np.asarray(waveform, dtype=np.float64), params.num_samples, params.fit)
    frames = np.lib.stride_tricks.sliding_window_view(signal, params.window_length)[:: params.hop_length]
    # Periodic Hann window, the usual choice for spectral analysis.
    window = np.hanning(params.window_length + 1)[:-1]
    spectrum = np.fft.rfft(frames * window, n=params.n_fft, axis=1)
    return np.log(np.abs(spectrum) + LOG_EPSILON).T.astype(np.float32)
