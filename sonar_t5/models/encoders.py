"""The three kinds of encoder, and --sonar_checkpoint files recognised by what they hold.

1. ssvp_slt's SONAR ASL encoder (sonar_asl_encoder.py): the encoder users bring, and their
   fine-tunes of it; ssvp_slt's own checkpoint files, or one converted by
   `python -m sonar_t5.models.convert_sonar_checkpoint`.
2. This project's FeatureEncoder (feature_encoder.py), trained from scratch when no SONAR
   encoder exists; its files are {'kind': 'feature_encoder', 'config', 'state_dict'}.
3. Identity: features that already are 1024-d SONAR embeddings (a FeatureEncoder mode).
Every encoder maps features (B, T, D_in) + mask to pooled (B, 1024) and token states
(B, T, token_dim). An encoder's config kind is feature, identity or sonar_asl; the files this
toolkit writes say `<config kind>_encoder`.
"""
from sonar_t5.common.checkpoint_io import load_checkpoint, load_state_dict_strict
from sonar_t5.common.errors import UserError

from .feature_encoder import FILE_KIND as FEATURE_FILE_KIND
from .feature_encoder import FeatureEncoder, FeatureEncoderConfig
from .sonar_asl_encoder import (SonarAslEncoder, SonarAslEncoderConfig,
                                config_from_state_dict, is_ssvp_state_dict, ssvp_state_dict,
                                unwrap_weights)

CONVERTED_KIND = "sonar_asl_encoder"  # written by sonar_t5/models/convert_sonar_checkpoint.py
OLD_FEATURE_FILE_KIND = "sonar_encoder"  # what feature encoder files said before


def encoder_from_config(config):
    """A random-weight encoder from the config dict a sonar-t5 checkpoint stores."""
    if config.get("kind") == "sonar_asl":
        return SonarAslEncoder(SonarAslEncoderConfig.from_dict(config))
    return FeatureEncoder(FeatureEncoderConfig.from_dict(config))


def read_sonar_asl_weights(path, ckpt):
    """-> (SonarAslEncoderConfig, state dict with this project's key names) of an ssvp_slt
    file, or None when the file is not one."""
    weights = unwrap_weights(ckpt)
    if not is_ssvp_state_dict(weights):
        return None
    state_dict = ssvp_state_dict(weights)
    return config_from_state_dict(state_dict, path), state_dict


def load_encoder(path):
    """The encoder of a --sonar_checkpoint file, any of the kinds above, loaded strictly
    (missing, unexpected and misshapen keys are named)."""
    fix = ("if you trust the file, convert it once to a weights-only file: python -m "
           f"sonar_t5.models.convert_sonar_checkpoint {path} converted_encoder.pt --trust_pickle")
    ckpt = load_checkpoint(path, refused_fix=fix)
    if ckpt.get("kind") in (FEATURE_FILE_KIND, OLD_FEATURE_FILE_KIND):
        encoder = FeatureEncoder(FeatureEncoderConfig.from_dict(ckpt["config"]))
        state_dict = ckpt["state_dict"]
    elif ckpt.get("kind") == CONVERTED_KIND:
        encoder = SonarAslEncoder(SonarAslEncoderConfig.from_dict(ckpt["config"]))
        state_dict = ckpt["state_dict"]
    else:
        found = read_sonar_asl_weights(path, ckpt)
        if found is None:
            keys = ", ".join(list(unwrap_weights(ckpt))[:4])
            raise UserError(f"not a SONAR encoder checkpoint (no ssvp_slt SONAR ASL encoder "
                            f"weights such as projection_out.weight; keys: {keys})", str(path),
                            "pass ssvp_slt's encoder checkpoint (e.g. "
                            "dm_70h_ub_sonar_encoder.pth) or a file of "
                            "sonar_t5.models.feature_encoder.save_feature_encoder")
        config, state_dict = found
        encoder = SonarAslEncoder(config)
    load_state_dict_strict(encoder, state_dict, path)
    return encoder
