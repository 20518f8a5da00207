"""Mode collapse: the conditioning gap and the levers against collapse."""
import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from sonar_t5.data.dataset import Collator, FeatureDataset, make_loader
from sonar_t5.evaluation.generation import GenerationSettings, run_evaluation
from sonar_t5.models.checkpoint import load_model

from .conftest import run_script, train


def gap(model, tokenizer, data):
    dataset = FeatureDataset(data / "manifests" / "val.tsv", data / "features" / "val",
                             expected_dim=model.encoder.config.input_dim)
    loader = make_loader(dataset, Collator(tokenizer), 32, shuffle=False)  # as in training
    return run_evaluation(model, loader, tokenizer, torch.device("cpu"), GenerationSettings(),
                          generate=False, show_progress=False)["cond_gap"]


class ConstantBridge(nn.Module):
    """A prefix that ignores the input: what a collapsed model effectively has."""

    def __init__(self, bridge):
        super().__init__()
        self.bridge = bridge

    def forward(self, states, mask=None):
        return self.bridge(torch.zeros_like(states[:, :1]), None)


@pytest.mark.slow
def test_conditioning_gap_positive_when_trained_and_zero_for_a_constant_prefix(tmp_path):
    out = tmp_path / "demo"  # one epoch of the demo: its own data, model and settings
    run_script("train_sonar_with_t5.py", "--demo", "--epochs", "1", "--output_dir", out,
               "--skip_final_scoring", check=True)
    model, tokenizer, _ = load_model(out / "last_model.pt")
    data = out / "demo_data"
    trained_gap = gap(model, tokenizer, data)
    history = json.loads((out / "training_history.json").read_text())
    assert trained_gap == pytest.approx(history[-1]["cond_gap"], rel=1e-3, abs=1e-4)
    assert trained_gap > 0.1  # nats/token, after one epoch (1.7 after the full demo)
    model.bridge = ConstantBridge(model.bridge)
    assert gap(model, tokenizer, data) == pytest.approx(0.0, abs=1e-6)


def test_word_dropout_zero_is_exactly_the_default(tiny_model):
    model, tok = tiny_model
    model.train()
    torch.manual_seed(0)
    prefix = torch.randn(2, 8, model.t5.config.d_model)
    labels = torch.tensor([tok.encode("fold the paper carefully")] * 2)
    torch.manual_seed(1)
    default = model.decoder_loss(prefix, labels)
    torch.manual_seed(1)
    zero = model.decoder_loss(prefix, labels, word_dropout=0.0)
    torch.manual_seed(1)
    half = model.decoder_loss(prefix, labels, word_dropout=0.5)
    model.eval()
    assert torch.equal(default, zero)
    assert not torch.equal(default, half)


def test_tokens_input_with_frozen_encoder_and_cache(tiny_data, sonar_checkpoint, tmp_path):
    common = ["--sonar_checkpoint", sonar_checkpoint, "--freeze_encoder", "--epochs", "1",
              "--resampler_input", "tokens"]
    train(tiny_data, tmp_path / "cache", *common)
    train(tiny_data, tmp_path / "nocache", *common, "--no_encoder_cache")
    a, b = (json.loads((tmp_path / d / "training_history.json").read_text())[0]
            for d in ("cache", "nocache"))
    for key in ("train_loss", "val_loss"):  # token states are cached as float16
        assert a[key] == pytest.approx(b[key], rel=2e-3), key


def test_word_dropout_flag_trains(tiny_data, tmp_path):
    result = train(tiny_data, tmp_path / "wd", "--epochs", "1", "--word_dropout", "0.2",
                   "--no_repeat_ngram_size", "3", "--repetition_penalty", "1.2")
    config = json.loads((tmp_path / "wd" / "config.json").read_text())
    assert config["args"]["word_dropout"] == 0.2
    assert config["generation"]["no_repeat_ngram_size"] == 3
    assert result.returncode == 0


def test_a_run_on_constant_input_is_flagged_by_epoch_2(tiny_data, tmp_path):
    """Every sample the same features: nothing to condition on, so the gap stays at 0 while
    the decoder learns the sentences' common words; the run says so at epoch 2."""
    data = shutil.copytree(tiny_data, tmp_path / "data")
    constant = np.full((20, 16), 0.5, dtype=np.float32)
    for split in ("train", "val"):
        for path in (data / "features" / split).iterdir():
            np.save(path.with_suffix(".npy"), constant)
    result = train(data, tmp_path / "run", "--epochs", "2", "--resampler_input", "tokens")
    history = json.loads((tmp_path / "run" / "training_history.json").read_text())
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert all(abs(r["cond_gap"]) < 1e-6 for r in history)
    warnings = [line for line in result.stdout.splitlines()
                if "warning: conditioning gap" in line]
    assert len(warnings) == 1 and "the decoder is ignoring its input" in warnings[0]
