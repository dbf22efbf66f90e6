import numpy as np
import pytest
import soundfile

from asr.data.audio_io import AudioFileError, load_audio


def _tone(rate, seconds=1.0, hz=440.0, channels=1):
  t = np.arange(int(rate * seconds)) / rate
  x = 0.5 * np.sin(2 * np.pi * hz * t)
  return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize("rate, channels, fmt", [(16000, 1, "WAV"), (8000, 1, "WAV"),
                                                 (44100, 2, "FLAC"), (22050, 1, "FLAC")])
def test_load_audio_resamples_to_16k_mono_and_keeps_pitch(tmp_path, rate, channels, fmt):
  path = tmp_path / f"tone.{fmt.lower()}"
  soundfile.write(path, _tone(rate, channels=channels), rate, format=fmt)
  audio = load_audio(path)
  assert audio.dtype == np.float32 and audio.ndim == 1
  assert abs(len(audio) - 16000) <= 1
  spectrum = np.abs(np.fft.rfft(audio))
  assert abs(np.argmax(spectrum) * 16000 / len(audio) - 440.0) < 2.0


def test_unreadable_file_is_named(tmp_path):
  path = tmp_path / "noise.wav"
  path.write_bytes(b"this is not audio" * 10)
  with pytest.raises(AudioFileError, match=r"noise\.wav: unreadable audio"):
    load_audio(path)


def test_missing_file_is_named(tmp_path):
  with pytest.raises(AudioFileError, match=r"missing\.flac: unreadable audio"):
    load_audio(tmp_path / "missing.flac")


def test_empty_file_is_named(tmp_path):
  path = tmp_path / "empty.wav"
  soundfile.write(path, np.zeros((0,)), 16000)
  with pytest.raises(AudioFileError, match=r"empty\.wav: empty audio"):
    load_audio(path)
