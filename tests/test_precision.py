"""Mixed precision on CPU: the autocast path, and T5's fp16 guard."""
import json

import pytest
import torch

from sonar_t5.common.errors import UserError
from sonar_t5.models.t5_decoder import load_t5
from sonar_t5.common.precision import guard_t5_fp16, resolve_precision

from .conftest import train


def test_bf16_autocast_training_runs_on_cpu(tiny_data, tmp_path):
    result = train(tiny_data, tmp_path / "bf16", "--epochs", "1", "--precision", "bf16")
    assert "(bf16," in result.stdout
    record = json.loads((tmp_path / "bf16" / "training_history.json").read_text())[0]
    assert record["train_loss"] > 0 and record["nonfinite_steps"] == 0


def test_t5_feed_forward_output_runs_in_fp32_under_autocast():
    t5 = load_t5("t5-tiny", vocab_size=50)
    guard_t5_fp16(t5)
    ff = t5.decoder.block[0].layer[-1].DenseReluDense
    x = torch.randn(2, 3, t5.config.d_model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ff.wi(x).dtype == torch.bfloat16  # the rest is autocast
        assert ff.wo(torch.randn(2, 3, t5.config.d_ff)).dtype == torch.float32  # guarded
    assert not any("wo" in k and "forward" in k for k in t5.state_dict())


def test_precision_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
