"""Build a fresh SonarT5 + tokenizer from the training run's settings."""
import json

from sonar_t5.common.errors import UserError

from .encoders import load_encoder
from .feature_encoder import FeatureEncoder, FeatureEncoderConfig
from .sonar_t5 import SonarT5, SonarT5Config
from .t5_decoder import is_preset, load_t5
from .tokenizer import load_pretrained_tokenizer, train_tokenizer


def load_t5_and_tokenizer(t5_model, texts=None, vocab_size=1000):
    """A preset T5 gets a SentencePiece model trained on `texts`; a pretrained T5 its own
    tokenizer (loaded second, so an unreachable model fails once, not twice)."""
    if is_preset(t5_model):
        tokenizer = train_tokenizer(texts, vocab_size)
        return load_t5(t5_model, vocab_size=tokenizer.vocab_size), tokenizer
    t5 = load_t5(t5_model)
    return t5, load_pretrained_tokenizer(t5_model)


def build_encoder(sonar_checkpoint, input_dim, d_model=512, num_layers=4, num_heads=8,
                  identity=False):
    """The encoder of --sonar_checkpoint (any kind sonar_t5/models/encoders.py recognises), else the
    identity, else a FeatureEncoder of this shape starting from random weights."""
    if sonar_checkpoint:
        encoder = load_encoder(sonar_checkpoint)
        if input_dim is not None and encoder.config.input_dim != input_dim:
            raise UserError(f"--sonar_checkpoint expects {encoder.config.input_dim}-d features "
                            f"but the data has {input_dim}-d", str(sonar_checkpoint),
                            "use the encoder trained on these features")
        return encoder
    return FeatureEncoder(FeatureEncoderConfig(
        kind="identity" if identity else "feature", input_dim=input_dim, d_model=d_model,
        num_layers=num_layers, num_heads=num_heads, ffn_dim=4 * d_model))


def build_model(*, t5, tokenizer, encoder, t5_model, bridge="perceiver",
                resampler_input=None,
                num_latents=64, num_layers=2, hidden_dim=768, num_heads=8, max_frames=0,
                normalize_features=False, contrastive_dim=0):
    if t5.config.vocab_size < tokenizer.vocab_size:
        raise UserError(f"T5 vocabulary ({t5.config.vocab_size}) is smaller than the "
                        f"tokenizer's ({tokenizer.vocab_size})", t5_model)
    config = SonarT5Config(
        encoder=json.loads(json.dumps(vars(encoder.config))),
        t5=json.loads(t5.config.to_json_string()), t5_model=t5_model, bridge=bridge,
        resampler_input=resampler_input, num_latents=num_latents, num_layers=num_layers,
        hidden_dim=hidden_dim, num_heads=num_heads, max_frames=max_frames,
        normalize_features=normalize_features, contrastive_dim=contrastive_dim)
    return SonarT5(config, t5=t5, encoder=encoder)
