"""Tokenizers: characters (default, blank = 0) and SentencePiece (an option for LibriSpeech scale).

Both map normalized text (`asr.data.text.normalize`) to int32 ids in `[1, vocab_size)`; id 0 is
the RNN-T blank and the label padding value, never a real token.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Iterable, Protocol

import numpy as np

from asr.data.text import ALPHABET, out_of_alphabet


class Tokenizer(Protocol):
  vocab_size: int

  def encode(self, text: str) -> np.ndarray: ...   # [U] int32, ids >= 1
  def decode(self, ids: Iterable[int]) -> str: ...  # ids 0 (blank/pad) are skipped
  def pieces(self) -> list[str]: ...                # the text of each id ("" for blank)


class OutOfVocabularyError(ValueError):
  pass


class CharTokenizer:
  """Characters of `alphabet` -> ids 1..len(alphabet); 0 is blank. Vectorized through a byte table."""

  def __init__(self, alphabet: str = ALPHABET):
    if len(set(alphabet)) != len(alphabet) or any(ord(c) > 127 for c in alphabet):
      raise ValueError(f"alphabet must be distinct ASCII characters, got {alphabet!r}")
    self.alphabet = alphabet
    self.vocab_size = len(alphabet) + 1
    self._table = np.zeros(256, np.int32)
    for i, c in enumerate(alphabet):
      self._table[ord(c)] = i + 1
    self._chars = np.array(["", *alphabet])

  def unknown_characters(self, text: str) -> list[str]:
    return out_of_alphabet(text, self.alphabet)

  def encode(self, text: str) -> np.ndarray:
    unknown = self.unknown_characters(text)
    if unknown:
      raise OutOfVocabularyError(f"characters outside the vocabulary: {''.join(unknown)!r}")
    return self._table[np.frombuffer(text.encode("ascii"), np.uint8)]

  def decode(self, ids: Iterable[int]) -> str:
    ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, np.int64)
    ids = ids[(ids > 0) & (ids < self.vocab_size)]
    return "".join(self._chars[ids])

  def pieces(self) -> list[str]:
    return list(self._chars)


class SentencePieceTokenizer:
  """A SentencePiece model whose id 0 is reserved for blank (trained with `pad_id=0`)."""

  def __init__(self, model_path: os.PathLike):
    import sentencepiece as spm
    self.model_path = pathlib.Path(model_path)
    self._sp = spm.SentencePieceProcessor(model_file=str(self.model_path))
    if self._sp.pad_id() != 0:
      raise ValueError(f"{model_path}: SentencePiece model must reserve id 0 (pad_id=0) for blank")
    self.vocab_size = self._sp.get_piece_size()

  @classmethod
  def train(cls, texts: Iterable[str], model_prefix: os.PathLike, vocab_size: int = 256,
            model_type: str = "unigram") -> "SentencePieceTokenizer":
    """Trains on `texts` (already normalized); writes `<model_prefix>.model` and `.vocab`."""
    import sentencepiece as spm
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
      for t in texts:
        f.write(t + "\n")
    try:
      spm.SentencePieceTrainer.train(
          input=f.name, model_prefix=str(model_prefix), vocab_size=vocab_size,
          model_type=model_type, pad_id=0, unk_id=1, bos_id=-1, eos_id=-1,
          character_coverage=1.0, num_threads=1, minloglevel=2,
          # Every character of the alphabet gets a piece, seen in `texts` or not, so any
          # normalized text encodes (a rare apostrophe is not an unknown piece).
          required_chars=ALPHABET.replace(" ", ""),
          hard_vocab_limit=False)
    finally:
      os.unlink(f.name)
    return cls(f"{model_prefix}.model")

  def encode(self, text: str) -> np.ndarray:
    ids = np.asarray(self._sp.encode(text), np.int32)
    if (ids == self._sp.unk_id()).any():
      raise OutOfVocabularyError(f"text has pieces unknown to {self.model_path.name}: {text!r}")
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    ids = [int(i) for i in ids if 0 < int(i) < self.vocab_size]
    return self._sp.decode(ids)

  def pieces(self) -> list[str]:
    """Each id's piece, with SentencePiece's word marker; "" for blank and control ids."""
    return ["" if i == 0 or self._sp.is_control(i) else self._sp.id_to_piece(i)
            for i in range(self.vocab_size)]
