"""Decoding: batched jitted greedy and beam search, streaming greedy from raw audio."""

from asr.decoding.beam import beam_search
from asr.decoding.greedy import (greedy_search, greedy_search_aligned, init_greedy_state,
                                 init_streaming, streaming_greedy_step)

__all__ = ["beam_search", "greedy_search", "greedy_search_aligned", "init_greedy_state",
           "init_streaming", "streaming_greedy_step"]
