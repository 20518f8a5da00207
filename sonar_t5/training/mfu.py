"""Model FLOPs utilisation (MFU): the share of the hardware's peak that training achieves.

    MFU = FLOPs per training sample x samples/s / (peak FLOP/s x processes)

FLOPs per sample are counted from the model itself: torch.utils.flop_counter.FlopCounterMode
over the run's first training step (its forward and backward at the run's shapes: the matrix
multiplies and attention every MFU figure counts, of whatever the step runs; a frozen
encoder served from its cache runs nothing), so the count costs no extra step. The peak is
the device's published dense figure for the run's dtype where known (CUDA), else measured
once per run: a large matrix multiply in the run's dtype with the run's threads. On a CPU
the measured peak is what this machine's BLAS reaches, not a datasheet number, so CPU MFU
says how close the step comes to that.
"""
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense (no sparsity) tensor-core peaks, TFLOP/s, from the vendors' datasheets: {name
# fragment: {dtype: peak}}; fp32 is the plain (non-TF32) figure, as PyTorch's default matmul
# precision uses. Matched against torch.cuda.get_device_name(), first fragment found wins.
CUDA_PEAKS_TFLOPS = {
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "L4": {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3},
    "A10": {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2},
    "V100": {"fp16": 125.0, "fp32": 15.7},
    "T4": {"fp16": 65.0, "fp32": 8.1},
}
PEAK_MATMUL_SIZE = 2048  # large enough that BLAS runs at its best on CPUs and GPUs


@dataclass
class FlopsMeter:
    """What MFU needs: the peak (set at start) and the FLOPs of one sample (set by the first
    training step; None until then)."""
    peak_flops: float
    peak_source: str  # "datasheet NAME" or "measured"
    world_size: int = 1
    flops_per_sample: float = None

    @contextmanager
    def counting(self, batch_size):
        """Around a training step: counts its FLOPs if none are known yet."""
        if self.flops_per_sample is not None:
            yield
            return
        with FlopCounterMode(display=False) as counter:
            yield
        self.flops_per_sample = counter.get_total_flops() / batch_size

    def mfu(self, samples_per_s):
        """samples_per_s over all processes -> MFU (0..1), or None before the count."""
        if self.flops_per_sample is None or not samples_per_s:
            return None
        return self.flops_per_sample * samples_per_s / (self.peak_flops * self.world_size)


def peak_flops(device, precision):
    """-> (peak FLOP/s for matrix multiplies in `precision` on `device`, where it came
    from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, peaks in CUDA_PEAKS_TFLOPS.items():
            if fragment in name and precision in peaks:
                return peaks[precision] * 1e12, f"datasheet {fragment} {precision}"
    return measured_matmul_flops(device, precision), "measured"


def measured_matmul_flops(device, precision, size=PEAK_MATMUL_SIZE, seconds=0.5):
    """The best FLOP/s of repeated size x size matrix multiplies in `precision`, with the
    threads PyTorch has now."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best, deadline = 0.0, time.perf_counter() + seconds
    torch.mm(a, b)  # warm-up: BLAS threads, kernels
    while time.perf_counter() < deadline or best == 0.0:
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = max(best, 2 * size ** 3 / (time.perf_counter() - start))
    return best


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
