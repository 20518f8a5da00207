"""Model FLOPs utilisation: FLOPs counted from the model, the peak, the ratio."""
import math

import pytest
import torch

from sonar_t5.training import mfu
from sonar_t5.training.mfu import FlopsMeter, measured_matmul_flops, peak_flops


def test_flops_of_a_step_are_counted_once_from_the_model():
    meter = FlopsMeter(peak_flops=1e9, peak_source="test")
    layer = torch.nn.Linear(256, 128)
    x = torch.randn(8, 256)
    with meter.counting(batch_size=8):
        layer(x).sum().backward()
    # forward 2*256*128 per sample; backward: the weight's gradient (x needs none) 2*256*128
    assert meter.flops_per_sample == 4 * 256 * 128
    with meter.counting(batch_size=8):  # counted already: the next steps run uncounted
        layer(torch.randn(8, 256)).sum().backward()
    assert meter.flops_per_sample == 4 * 256 * 128
    assert meter.mfu(1000.0) == pytest.approx(4 * 256 * 128 * 1000 / 1e9)
    assert FlopsMeter(1e9, "test", world_size=2, flops_per_sample=1e6).mfu(1000.0) == 0.5
    assert FlopsMeter(1e9, "test").mfu(1000.0) is None  # before the first step


def test_the_peak_is_measured_on_cpu_and_read_from_the_datasheet_on_known_gpus(monkeypatch):
    measured = measured_matmul_flops(torch.device("cpu"), "fp32", size=256, seconds=0.05)
    assert math.isfinite(measured) and measured > 1e8  # any CPU does 0.1 GFLOP/s
    assert peak_flops(torch.device("cpu"), "fp32")[1] == "measured"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    assert peak_flops(torch.device("cuda"), "fp16") == (65e12, "datasheet T4 fp16")
    monkeypatch.setattr(mfu, "measured_matmul_flops", lambda device, precision: 1.0)
    # a T4 has no bf16 tensor cores: measured, not guessed
    assert peak_flops(torch.device("cuda"), "bf16") == (1.0, "measured")
