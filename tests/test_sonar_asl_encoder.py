"""ssvp_slt's SONAR ASL encoder through --sonar_checkpoint: every file wrapping, outputs equal
to transformers' own T5 on the same weights, frozen and unfrozen runs, the conversion of
files holding Python objects, and the smoke test."""
import argparse
import json

import pytest
import torch
from transformers import T5Config, T5Model

from sonar_t5.common.errors import UserError
from sonar_t5.models.checkpoint import load_model
from sonar_t5.models.encoders import load_encoder
from sonar_t5.models.sonar_asl_encoder import ssvp_state_dict

from .conftest import Payload, assert_user_error, run_script, train

FEATURE_DIM, D_MODEL = 16, 64  # the tiny demo data's features; a tiny T5


def tiny_t5_config():
    return T5Config(vocab_size=40, d_model=D_MODEL, d_kv=16, d_ff=96, num_layers=2,
                    num_decoder_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
                    dropout_rate=0.0, decoder_start_token_id=0)


def ssvp_weights(seed=0):
    """A state dict with ssvp_slt's exact key names (SignT5SonarEncoder): HF T5 parameter names,
    the feature projection inside the encoder stack, projection_out to 1024."""
    torch.manual_seed(seed)
    weights = T5Model(tiny_t5_config()).state_dict()
    weights["encoder.feature_projection.feature_proj.weight"] = torch.randn(D_MODEL, FEATURE_DIM) * 0.3
    weights["encoder.feature_projection.feature_proj.bias"] = torch.randn(D_MODEL) * 0.1
    weights["encoder.feature_projection.feature_proj_scale"] = 1 + torch.rand(D_MODEL)
    weights["projection_out.weight"] = torch.randn(1024, D_MODEL) * 0.1
    return weights


def old_names(weights):
    """Files from before ssvp_slt moved the projection into FeatureProjection."""
    return {k.replace("feature_projection.feature_proj", "feature_proj"): v
            for k, v in weights.items()}


WRAPPINGS = {"student": lambda w: {"student": w, "epoch": 3},
             "model": lambda w: {"model": w},
             "model_state": lambda w: {"model_state": w, "optimizer": {"lr": 1e-4}},
             "bare": lambda w: w,
             "old_feature_proj_names": lambda w: {"student": old_names(w)}}


@pytest.fixture(scope="module")
def ssvp_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ssvp") / "dm_70h_ub_sonar_encoder.pth"
    torch.save({"student": ssvp_weights()}, path)
    return path


def reference_outputs(weights, features, mask):
    """Computed independently: transformers' T5Model on the same weights, the projection and
    the one-step pooling written out by hand."""
    t5 = T5Model(tiny_t5_config()).eval()
    t5.load_state_dict({k: v for k, v in weights.items() if not k.startswith(
        ("encoder.feature_projection", "projection_out"))})
    projection = (features @ weights["encoder.feature_projection.feature_proj.weight"].T
                  + weights["encoder.feature_projection.feature_proj.bias"])
    embeds = weights["encoder.feature_projection.feature_proj_scale"] * projection
    out = t5(inputs_embeds=embeds, attention_mask=mask.long(),
             decoder_input_ids=torch.zeros(len(features), 1, dtype=torch.long))
    pooled = out.last_hidden_state[:, 0] @ weights["projection_out.weight"].T
    return pooled, out.encoder_last_hidden_state


@pytest.mark.parametrize("wrapping", list(WRAPPINGS))
def test_every_wrapping_loads_and_matches_transformers_t5(tmp_path, wrapping):
    weights = ssvp_weights()
    path = tmp_path / "encoder.pth"
    torch.save(WRAPPINGS[wrapping](weights), path)
    encoder = load_encoder(path).eval()
    c = encoder.config
    assert (c.kind, c.input_dim, c.d_model, c.num_layers, c.num_decoder_layers, c.num_heads,
            c.d_ff, c.gated, c.vocab_size) == ("sonar_asl", 16, 64, 2, 2, 4, 96, True, 40)
    features = torch.randn(3, 11, FEATURE_DIM)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2, 2:] = False
    with torch.no_grad():
        pooled, tokens = encoder(features, mask)
        expected_pooled, expected_tokens = reference_outputs(weights, features, mask)
    assert pooled.shape == (3, 1024) and tokens.shape == (3, 11, D_MODEL)
    torch.testing.assert_close(pooled, expected_pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens, expected_tokens, atol=1e-5, rtol=1e-5)


def test_mismatched_keys_are_named(tmp_path):
    weights = ssvp_weights()
    del weights["decoder.block.1.layer.2.DenseReluDense.wo.weight"]
    weights["encoder.block.0.layer.0.SelfAttention.extra.weight"] = torch.zeros(2)
    weights["encoder.block.1.layer.0.SelfAttention.k.weight"] = torch.zeros(3, 3)
    torch.save({"model": weights}, tmp_path / "bad.pth")
    with pytest.raises(UserError) as error:
        load_encoder(tmp_path / "bad.pth")
    message = str(error.value)
    assert "missing keys: decoder.block.1.layer.2.DenseReluDense.wo.weight" in message
    assert "unexpected keys: encoder.block.0.layer.0.SelfAttention.extra.weight" in message
    assert "wrong-shape keys: encoder.block.1.layer.0.SelfAttention.k.weight" in message
    assert "\n" not in message


def test_frozen_tokens_run_keeps_the_encoder_exactly_and_validates(tiny_data, ssvp_checkpoint,
                                                                   tmp_path):
    out = tmp_path / "frozen"
    train(tiny_data, out, "--sonar_checkpoint", ssvp_checkpoint, "--freeze_encoder",
          "--resampler_input", "tokens", "--epochs", "2")
    history = json.loads((out / "training_history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert all(0 <= r["val_bleu"] <= 100 for r in history)
    # the bridge and decoder learn on the frozen encoder's states
    assert history[1]["train_loss"] < history[0]["train_loss"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["encoder"]["kind"] == "sonar_asl"
    model, _, _ = load_model(out / "best_model.pt")
    assert model.bridge.input_proj.in_features == D_MODEL  # the encoder's own token width
    saved = model.encoder.state_dict()
    original = ssvp_state_dict(torch.load(ssvp_checkpoint, weights_only=True)["student"])
    assert set(saved) == set(original)
    for key, value in original.items():
        assert torch.equal(saved[key], value), key
    result = run_script("validate_perceiver_model.py", "--checkpoint", out / "best_model.pt",
                        "--features", tiny_data / "features" / "test", "--manifest",
                        tiny_data / "manifests" / "test.tsv", "--output", out / "v", check=True)
    summary = json.loads((out / "v" / "validation_summary.json").read_text())
    assert summary["num_samples"] == 24 and "BLEU" in result.stdout


def test_unfrozen_run_with_gradient_checkpointing_trains_the_encoder(tiny_data,
                                                                    ssvp_checkpoint, tmp_path):
    out = tmp_path / "unfrozen"
    train(tiny_data, out, "--sonar_checkpoint", ssvp_checkpoint, "--gradient_checkpointing",
          "--epochs", "2")
    history = json.loads((out / "training_history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    model, _, _ = load_model(out / "last_model.pt")
    original = ssvp_state_dict(torch.load(ssvp_checkpoint, weights_only=True)["student"])
    assert not torch.equal(model.encoder.state_dict()["encoder.block.0.layer.0.SelfAttention.q.weight"],
                           original["encoder.block.0.layer.0.SelfAttention.q.weight"])
    run_script("validate_perceiver_model.py", "--checkpoint", out / "best_model.pt",
               "--features", tiny_data / "features" / "test", "--manifest",
               tiny_data / "manifests" / "test.tsv", "--output", out / "v", check=True)


def test_a_file_with_a_pickled_config_is_refused_then_converted_then_trains(tiny_data, tmp_path):
    path = tmp_path / "checkpoint-best.pth"
    torch.save({"student": ssvp_weights(), "args": argparse.Namespace(lr=1e-4)}, path)
    refused = train(tiny_data, tmp_path / "run", "--sonar_checkpoint", path, "--epochs", "1",
                    check=False)
    assert_user_error(refused, "refused to load checkpoint", "argparse.Namespace",
                      "python -m sonar_t5.models.convert_sonar_checkpoint", "--trust_pickle")
    assert not (tmp_path / "run").exists()
    without_flag = run_script("-m", "sonar_t5.models.convert_sonar_checkpoint", path, tmp_path / "c.pt")
    assert_user_error(without_flag, "refused to load checkpoint", "--trust_pickle")
    converted = tmp_path / "converted.pt"
    result = run_script("-m", "sonar_t5.models.convert_sonar_checkpoint", path, converted,
                        "--trust_pickle", check=True)
    assert "unpickling" in result.stdout and "d_model 64, 2 + 2 layers" in result.stdout
    assert torch.load(converted, weights_only=True)["kind"] == "sonar_asl_encoder"
    train(tiny_data, tmp_path / "run", "--sonar_checkpoint", converted, "--freeze_encoder",
          "--epochs", "1")
    again = run_script("-m", "sonar_t5.models.convert_sonar_checkpoint", path, converted, "--trust_pickle")
    assert_user_error(again, "output file exists")


def test_a_malicious_pickle_never_runs_without_the_trust_flag(tiny_data, tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save({"student": ssvp_weights(), "x": Payload(marker)}, path)
    result = train(tiny_data, tmp_path / "run", "--sonar_checkpoint", path, check=False)
    assert_user_error(result, "refused to load checkpoint")
    result = run_script("test_perceiver_architecture.py", "--sonar_checkpoint", path)
    assert_user_error(result, "refused to load checkpoint")
    result = run_script("-m", "sonar_t5.models.convert_sonar_checkpoint", path, tmp_path / "c.pt")
    assert_user_error(result, "refused to load checkpoint")
    assert not marker.exists() and not (tmp_path / "c.pt").exists()


def test_smoke_test_checks_a_sonar_checkpoint(ssvp_checkpoint):
    result = run_script("test_perceiver_architecture.py", "--sonar_checkpoint", ssvp_checkpoint,
                        "--t5_model", "t5-tiny", check=True)
    assert ("✅ SONAR encoder checkpoint loaded (ssvp_slt SONAR ASL encoder: 16-d features, "
            "d_model 64, 2 + 2 layers") in result.stdout
    assert "pooled (2, 1024), tokens (2, 9, 64)" in result.stdout
    assert "encoder: ssvp_slt SONAR ASL encoder" in result.stdout
    assert "✅ ALL TESTS PASSED!" in result.stdout


def test_not_an_encoder_file_names_what_it_holds(tmp_path):
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a SONAR encoder checkpoint .*keys: fc.weight"):
        load_encoder(tmp_path / "other.pth")
