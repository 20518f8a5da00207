"""--global_batch_size: one recipe, any number of processes. The accumulation is derived from
the processes and --batch_size per process, refused where they do not divide the global
batch, and said in the start line and config.json; one process accumulating two batches
trains as two processes with one batch each."""
import json

import pytest

from .conftest import run_patched, run_script, train_argv
from .processes import patched_script, run_python
from .test_reliability_families import torchrun

# Dropout draws other masks per process and batch: without it the two set-ups compute the
# same sums (the batches are the same; the sampler gives process r every r-th batch).
NO_DROPOUT = """
import torch
F, attention = torch.nn.functional, torch.nn.functional.scaled_dot_product_attention
torch.nn.Dropout.forward = lambda self, x: x
F.dropout = lambda x, *args, **kwargs: x
F.scaled_dot_product_attention = (  # nn.MultiheadAttention's attention dropout
    lambda q, k, v, attn_mask=None, dropout_p=0.0, *args, **kwargs:
    attention(q, k, v, attn_mask, 0.0, *args, **kwargs))
"""
FLAGS = ("--epochs", 2, "--batch_size", 8, "--global_batch_size", 16, "--log_every", 1,
         "--skip_final_scoring")


def history(out):
    return json.loads((out / "training_history.json").read_text())


@pytest.mark.slow
def test_one_process_accumulating_trains_as_two_processes(tiny_data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = run_patched(NO_DROPOUT, train_argv(tiny_data, one, *FLAGS))
    assert single.returncode == 0, single.stderr[-3000:]
    assert "batch 16 = 8 per process x 1 process x 2 accumulation steps" in single.stdout
    script = patched_script(tmp_path / "no_dropout.py", NO_DROPOUT, "train_sonar_with_t5.py",
                            train_argv(tiny_data, two, *FLAGS))
    double = run_python(*torchrun(script))
    assert double.returncode == 0, double.stderr[-3000:]
    assert "batch 16 = 8 per process x 2 processes x 1 accumulation step" in double.stdout

    batches = [json.loads((out / "config.json").read_text())["batch"] for out in (one, two)]
    assert batches == [{"global": 16, "per_process": 8, "processes": 1, "accumulation_steps": 2},
                       {"global": 16, "per_process": 8, "processes": 2, "accumulation_steps": 1}]
    a, b = history(one), history(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [6, 12]  # 96 samples / 16
    for key in ("train_loss", "val_loss"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], rel=1e-5), key
    assert a[0]["train_loss"] != pytest.approx(a[1]["train_loss"], rel=1e-3)  # it learned


def test_a_global_batch_the_processes_do_not_divide_is_refused(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = run_script("train_sonar_with_t5.py",
                        *train_argv(tiny_data, out, "--batch_size", 8, "--global_batch_size", 20))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --global_batch_size 20 is not a multiple of --batch_size 8 x 1 process = 8, "
        "command line (choose a --batch_size per process (or a number of processes) whose "
        "product divides it)")
    assert not out.exists()
    both = run_script("train_sonar_with_t5.py", *train_argv(
        tiny_data, out, "--global_batch_size", 32, "--grad_accum_steps", 2))
    assert both.returncode == 2 and "both set the accumulation" in both.stderr
