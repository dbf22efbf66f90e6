"""Models: encoders (one contract, built by family name), prediction networks, joint, the
transducer."""

from asr.models.conformer import ConformerConfig, ConformerEncoder, TransformerConfig, \
    TransformerEncoder
from asr.models.encoder import ENCODERS, EncoderOutput, build_encoder, encoder_config
from asr.models.lstm_encoder import LSTMEncoder, LSTMEncoderConfig
from asr.models.transducer import Transducer, TransducerConfig

__all__ = ["ENCODERS", "ConformerConfig", "ConformerEncoder", "EncoderOutput", "LSTMEncoder",
           "LSTMEncoderConfig", "Transducer", "TransducerConfig", "TransformerConfig",
           "TransformerEncoder", "build_encoder", "encoder_config"]
