"""Encoders (ssvp_slt's SONAR ASL encoder, a feature encoder from scratch, identity), bridges
(Perceiver Resampler, projection baseline), T5 decoder glue."""
from .bridges import BRIDGES, RESAMPLER_INPUTS, Bridge, register_bridge
from .feature_encoder import SONAR_DIM, FeatureEncoder, FeatureEncoderConfig
from .perceiver import PerceiverResampler
from .projection_bridge import ProjectionBridge
from .sonar_asl_encoder import SonarAslEncoder, SonarAslEncoderConfig
from .sonar_t5 import SonarT5, SonarT5Config
from .t5_decoder import T5_PRESETS
from .tokenizer import Tokenizer

__all__ = ["BRIDGES", "RESAMPLER_INPUTS", "SONAR_DIM", "Bridge", "FeatureEncoder",
           "FeatureEncoderConfig", "PerceiverResampler", "ProjectionBridge", "SonarAslEncoder",
           "SonarAslEncoderConfig", "SonarT5", "SonarT5Config", "T5_PRESETS", "Tokenizer",
           "register_bridge"]
