"""Models: encoders (one contract), prediction networks, joint, the transducer."""

from asr.models.encoder import EncoderOutput, LSTMEncoder
from asr.models.transducer import Transducer, TransducerConfig

__all__ = ["EncoderOutput", "LSTMEncoder", "Transducer", "TransducerConfig"]
