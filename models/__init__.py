"""SONAR encoder, bridges (Perceiver Resampler, projection baseline), T5 decoder glue."""
from .perceiver import PerceiverResampler
from .projection_bridge import ProjectionBridge
from .sonar_encoder import SONAR_DIM, SonarEncoder, SonarEncoderConfig
from .sonar_t5 import BRIDGES, RESAMPLER_INPUTS, SonarT5, SonarT5Config
from .t5_decoder import T5_PRESETS
from .tokenizer import Tokenizer

__all__ = ["BRIDGES", "RESAMPLER_INPUTS", "SONAR_DIM", "PerceiverResampler", "ProjectionBridge",
           "SonarEncoder", "SonarEncoderConfig", "SonarT5", "SonarT5Config", "T5_PRESETS",
           "Tokenizer"]
