"""The pretrained-decoder path: the original guide's three commands (--t5_model t5-small by
default), resolved through the Hugging Face cache the way a hub name is, offline.

No hub here: a t5-small-shaped model with random weights and a SentencePiece model with T5's
special ids are saved with save_pretrained into a cache laid out as huggingface_hub lays out
a download (models--t5-small/refs/main -> snapshots/<revision>/, spiece.model included).
"""
import json

import pytest
from transformers import T5Config, T5ForConditionalGeneration

from sonar_t5.data.synthetic import make_demo_data
from sonar_t5.models.tokenizer import train_tokenizer

from .conftest import TEXTS, data_args, run_patched

REVISION = "0123456789abcdef0123456789abcdef01234567"

# The guide's commands after `python train_sonar_with_t5.py`, but for the paths (its encoder
# file, data and output directory are ours) and --device.
GUIDE = {
    "quick_test": ["--epochs", "2", "--batch_size", "8"],
    "frozen": ["--freeze_encoder", "--epochs", "30", "--batch_size", "16", "--learning_rate",
               "1e-4"],
    "unfrozen": ["--epochs", "30", "--batch_size", "16", "--learning_rate", "1e-4",
                 "--encoder_lr_scale", "0.2"],
}

# Stops a run with SIGTERM once its first epoch is saved: the toolkit's own graceful stop.
STOP_AFTER_FIRST_EPOCH = (
    "import os, signal, train_sonar_with_t5 as script\n"
    "save = script.save_progress\n"
    "def save_then_stop(*args, **kwargs):\n"
    "    save(*args, **kwargs)\n"
    "    os.kill(os.getpid(), signal.SIGTERM)\n"
    "script.save_progress = save_then_stop\n")


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf_cache") / "hub"
    repo = cache / "models--t5-small"
    snapshot = repo / "snapshots" / REVISION
    config = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6,
                      num_heads=8, relative_attention_num_buckets=32, dropout_rate=0.1,
                      feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0,
                      eos_token_id=1)
    T5ForConditionalGeneration(config).save_pretrained(snapshot)
    (snapshot / "spiece.model").write_bytes(train_tokenizer(TEXTS, vocab_size=60).model_bytes)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return cache


@pytest.fixture(scope="module")
def guide_data(tmp_path_factory):
    """Two batches of the guide's size: what is tested is the t5-small-shaped model's path."""
    return make_demo_data(tmp_path_factory.mktemp("guide_data"), num_train=16, num_val=4,
                          num_test=4, feature_dim=16, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GUIDE))
def test_guide_command_runs_its_first_epoch_with_t5_small_from_the_cache(
        name, hub_cache, guide_data, sonar_checkpoint, tmp_path):
    out = tmp_path / name
    argv = [*map(str, data_args(guide_data)), "--sonar_checkpoint", str(sonar_checkpoint),
            "--output_dir", str(out), *GUIDE[name], "--device", "cpu"]
    # the hub library reads HF_HUB_CACHE when it is imported: a new interpreter
    result = run_patched(STOP_AFTER_FIRST_EPOCH, argv, env={"HF_HUB_CACHE": str(hub_cache)},
                         new_interpreter=True)
    assert result.returncode == 143, result.stderr[-3000:]  # SIGTERM, after epoch 1's save
    history = json.loads((out / "training_history.json").read_text())
    assert [r["epoch"] for r in history] == [1]
    assert history[0]["train_loss"] > 0 and history[0]["val_loss"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["t5_model"] == "t5-small"  # the guide's default, not a preset
    t5 = config["model_config"]["t5"]
    assert (t5["d_model"], t5["num_decoder_layers"], t5["vocab_size"]) == (512, 6, 32128)
    assert "resume with:" in result.stdout
