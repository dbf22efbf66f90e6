"""Decoding: batched jitted greedy and beam search, streaming greedy."""

from asr.decoding.beam import beam_search
from asr.decoding.greedy import greedy_search, init_greedy_state, streaming_greedy_step

__all__ = ["beam_search", "greedy_search", "init_greedy_state", "streaming_greedy_step"]
