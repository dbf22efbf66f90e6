"""eSpeak NG speech synthesis through `ctypes`, with voices defined by parameter files.

The PyPI package `espeakng-loader` ships `libespeak-ng.so` and its data folder, so the corpus
needs no system package and no network. eSpeak NG reads a *voice variant* from a text file in
`espeak-ng-data/voices/!v/`; we never write into site-packages: `VoiceBank` builds a private data
folder whose entries are symbolic links to the shipped data, plus a `!v` folder holding one
generated variant file per synthetic speaker (pitch, formant scales, breathiness, ...).

eSpeak NG keeps global state, so one process holds one `Synthesizer`; the corpus builder uses one
process per core.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import threading

import numpy as np

ESPEAK_SAMPLE_RATE = 22050  # eSpeak NG's native output rate (its Initialize call returns it)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def shipped_data_path() -> pathlib.Path:
  import espeakng_loader
  return pathlib.Path(espeakng_loader.get_data_path())


class VoiceBank:
  """A private eSpeak NG data folder with generated voice-variant files.

  Args:
    root: folder to create (e.g. `<data_dir>/espeak_voices/<hash>`).
    variants: name -> variant-file text.
  """

  def __init__(self, root: os.PathLike, variants: dict[str, str]):
    self.root = pathlib.Path(root)
    self.data_path = self.root / "espeak-ng-data"
    shipped = shipped_data_path()
    vdir = self.data_path / "voices" / "!v"
    vdir.mkdir(parents=True, exist_ok=True)
    for entry in shipped.iterdir():
      if entry.name == "voices":
        continue
      link = self.data_path / entry.name
      if not link.exists():
        link.symlink_to(entry)
    # Only the generated variants: eSpeak NG's voice table holds a few hundred entries.
    for name, text in variants.items():
      path = vdir / name
      if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(".tmp%d" % os.getpid())
        tmp.write_text(text)
        tmp.replace(path)  # atomic: several builder processes may write the same bank


class Synthesizer:
  """One process's eSpeak NG engine.

  `synthesize(text, voice, rate_wpm)` returns float32 audio in [-1, 1] at `ESPEAK_SAMPLE_RATE`,
  shape `[num_samples]`. `voice` is `"<language>+<variant>"`, e.g. `"en-us+spk0001"`.
  """

  _lock = threading.Lock()

  def __init__(self, data_path: os.PathLike | None = None):
    import espeakng_loader
    self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
    self._lib.espeak_Initialize.restype = ctypes.c_int
    self._lib.espeak_Initialize.argtypes = [
        ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    self._lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
    # eSpeak NG wants the folder that *contains* `espeak-ng-data`.
    path = pathlib.Path(data_path or shipped_data_path()).parent
    rate = self._lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(path).encode(), 0)
    if rate != ESPEAK_SAMPLE_RATE:
      raise RuntimeError(f"eSpeak NG failed to initialise from {path} (returned {rate})")
    self._chunks: list[np.ndarray] = []

    def _collect(wav, num_samples, events):
      if num_samples > 0:
        self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
      return 0

    self._callback = _SYNTH_CALLBACK(_collect)  # keep a reference: C holds the pointer
    self._lib.espeak_SetSynthCallback(self._callback)
    # The first utterance after start-up reads some state eSpeak NG has not yet written; a fixed
    # warm-up utterance makes every later one a deterministic function of its inputs.
    self.synthesize("warm up", "en-us", 175)

  def synthesize(self, text: str, voice: str, rate_wpm: int = 175, noise_seed: int = 1) -> np.ndarray:
    with self._lock:
      # Breath and whisper noise come from eSpeak NG's own generator, which it seeds from the
      # clock at start-up: seed it per utterance.
      self._lib.espeak_ng_SetRandSeed(ctypes.c_long(noise_seed))
      if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError(f"eSpeak NG has no voice {voice!r}")
      self._lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
      self._lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
      self._chunks = []
      data = text.encode("utf-8") + b"\0"
      err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0,
                                   _ESPEAK_CHARS_UTF8, None, None)
      if err != 0:
        raise RuntimeError(f"eSpeak NG could not synthesize {text!r} (error {err})")
      self._lib.espeak_Synchronize()
      chunks, self._chunks = self._chunks, []
    if not chunks:
      return np.zeros([0], np.float32)
    return np.concatenate(chunks).astype(np.float32) / 32768.0

