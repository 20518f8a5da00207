"""Interrupted runs, full disks, non-finite losses, untrusted checkpoints, edge-case inputs."""
import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from sonar_t5.data.dataset import Collator, FeatureDataset, make_loader
from sonar_t5.evaluation.generation import GenerationSettings, run_evaluation
from sonar_t5.evaluation.metrics import diversity, translation_metrics
from sonar_t5.models.checkpoint import load_checkpoint, load_model
from sonar_t5.models.feature_encoder import save_feature_encoder
from sonar_t5.models import FeatureEncoder, FeatureEncoderConfig

from .conftest import ROOT, assert_user_error, run_patched, run_script, train_argv
from .processes import start_python

def history(out):
    return [r["epoch"] for r in json.loads((Path(out) / "training_history.json").read_text())]


def assert_complete(out, epochs):
    assert history(out) == list(range(1, epochs + 1))
    assert load_checkpoint(Path(out) / "last_model.pt")["epoch"] == epochs
    model, _, _ = load_model(Path(out) / "best_model.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_five_sigkills_at_random_moments_then_resume(tiny_data, tmp_path):
    out, epochs, rng = tmp_path / "run", 6, random.Random(7)
    for kill in range(5):
        flag = "--resume" if (out / "last_model.pt").exists() else "--overwrite"
        proc = start_python("train_sonar_with_t5.py",
                            *train_argv(tiny_data, out, "--epochs", epochs, flag),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 4.5))  # start-up ~1 s, the whole run ~4 s: any moment
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "last_model.pt").exists():  # whatever moment it died at, it is readable
            done = load_checkpoint(out / "last_model.pt")["epoch"]
            # the files of one epoch are renamed into place microseconds apart: a kill in
            # between finds the new checkpoint beside the previous history (--resume reads
            # the history the checkpoint holds; seen once in many runs)
            assert history(out) in (list(range(1, done + 1)), list(range(1, done)))
    flag = "--resume" if (out / "last_model.pt").exists() else "--overwrite"
    run_script("train_sonar_with_t5.py", *train_argv(tiny_data, out, "--epochs", epochs, flag),
               check=True)
    assert_complete(out, epochs)


KILL_DURING_SECOND_SAVE = """
import os, signal, torch
_save, _calls = torch.save, []
def save(obj, f, *a, **k):
    _calls.append(1)
    if len(_calls) == 4:  # epoch 2's last_model.pt: write half of it, then die
        f.write(b"PK\\x03\\x04" + b"0" * 1000); f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(obj, f, *a, **k)
torch.save = save
"""


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(tiny_data, tmp_path):
    out = tmp_path / "run"
    # saves: epoch 1 best + last, epoch 2 best (if improved) ... the 4th is a last_model.pt
    # or a best_model.pt write; either way the file being replaced stays readable.
    result = run_patched(KILL_DURING_SECOND_SAVE, train_argv(tiny_data, out, "--epochs", 3))
    assert result.returncode == -signal.SIGKILL
    last = load_checkpoint(out / "last_model.pt")
    assert last["epoch"] in (1, 2)
    load_model(out / "best_model.pt")
    assert list(out.glob(".*.tmp"))  # what the killed write left beside the checkpoint
    run_script("train_sonar_with_t5.py", *train_argv(tiny_data, out, "--epochs", 3, "--resume"),
               check=True)
    assert_complete(out, 3)
    assert not list(out.glob(".*.tmp"))  # cleaned up by --resume


FULL_DISK_ON_SECOND_EPOCH = """
import errno, torch
_save, _calls = torch.save, []
def save(obj, f, *a, **k):
    _calls.append(1)
    if len(_calls) > 2:
        raise OSError(errno.ENOSPC, "No space left on device")
    return _save(obj, f, *a, **k)
torch.save = save
"""


@pytest.mark.slow
def test_full_disk_keeps_the_previous_checkpoint_and_says_so(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = run_patched(FULL_DISK_ON_SECOND_EPOCH, train_argv(tiny_data, out, "--epochs", 3))
    line = assert_user_error(result, "No space left on device", "the previous file is unchanged")
    assert "_model.pt" in line
    assert load_checkpoint(out / "last_model.pt")["epoch"] == 1
    assert not list(out.glob(".*.tmp"))  # no half-written temp files left behind


@pytest.mark.slow
def test_sigint_saves_mid_epoch_and_resume_finishes(tiny_data, tmp_path):
    out = tmp_path / "run"
    argv = train_argv(tiny_data, out, "--epochs", 8, "--batch_size", 4)
    proc = start_python("train_sonar_with_t5.py", *argv,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = time.time()
    while not (out / "training_history.json").exists() and time.time() - start < 300:
        time.sleep(0.1)
    time.sleep(1.0)  # into epoch 2
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    resume = re.search(r"resume with: (.*)", stdout).group(1)
    assert resume.endswith("--resume")
    saved = load_checkpoint(out / "last_model.pt")
    assert saved["state"]["epoch"] >= 1
    run_script(*resume.split()[1:], check=True)
    assert_complete(out, 8)


NAN_LOSS = """
import torch
from sonar_t5.models.sonar_t5 import SonarT5
_forward, _calls = SonarT5.forward, []
def forward(self, *a, **k):
    _calls.append(1)
    loss = _forward(self, *a, **k)
    bad = {BAD}
    return loss * float("nan") if bad(len(_calls)) else loss
SonarT5.forward = forward
"""


@pytest.mark.slow
def test_non_finite_batches_are_skipped_and_counted(tiny_data, tmp_path):
    out = tmp_path / "run"
    patch = NAN_LOSS.replace("{BAD}", "lambda n: n in (2, 5, 9)")
    result = run_patched(patch, train_argv(tiny_data, out, "--epochs", 2))
    assert result.returncode == 0, result.stderr[-2000:]
    records = json.loads((out / "training_history.json").read_text())
    assert records[-1]["nonfinite_steps"] == 3
    assert all(r["train_loss"] == r["train_loss"] for r in records)  # finite mean of the rest
    assert_complete(out, 2)


@pytest.mark.slow
def test_a_run_that_keeps_diverging_stops_with_its_last_good_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    # epoch 1 (24 batches) is fine, epoch 2 takes 6 steps of 24 (an epoch without one step
    # stops the run too), epoch 3 reaches 20 non-finite steps in a row
    patch = NAN_LOSS.replace("{BAD}", "lambda n: n > 30")
    result = run_patched(patch, train_argv(tiny_data, out, "--epochs", 10, "--batch_size", 4))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "training diverged: 20 non-finite steps in a row" in result.stderr
    last = load_checkpoint(out / "last_model.pt")
    assert last["epoch"] >= 1
    model, _, _ = load_model(out / "last_model.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_incompatible_and_wrong_shape_checkpoints(tiny_run, tiny_data, tmp_path):
    run, _ = tiny_run
    ckpt = torch.load(run / "best_model.pt", weights_only=True)
    ckpt["model_config"]["num_latents"] = 5  # config no longer matches the weights
    torch.save(ckpt, tmp_path / "incompatible.pt")
    result = run_script("validate_perceiver_model.py", "--checkpoint", tmp_path / "incompatible.pt",
                        "--features", tiny_data / "features" / "test", "--manifest",
                        tiny_data / "manifests" / "test.tsv", "--output", tmp_path / "v")
    assert_user_error(result, "checkpoint does not match the model", "bridge.latents")
    enc = FeatureEncoder(FeatureEncoderConfig(input_dim=32, d_model=32, num_layers=1, num_heads=4))
    save_feature_encoder(enc, tmp_path / "sonar32.pt")
    result = run_script("train_sonar_with_t5.py", *train_argv(tiny_data, tmp_path / "out",
                        "--sonar_checkpoint", tmp_path / "sonar32.pt"))
    assert_user_error(result, "--sonar_checkpoint expects 32-d features but the data has 16-d")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, fragment", [
    (["--word_dropout", "1.5"], "--word_dropout"),
    (["--no_encoder_cache"], "--no_encoder_cache only applies with --freeze_encoder"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--precision", "fp16"], "--precision fp16 needs a CUDA GPU"),
])
def test_senseless_flag_combinations(tiny_data, tmp_path, flags, fragment):
    result = run_script("train_sonar_with_t5.py", *train_argv(tiny_data, tmp_path / "o", *flags))
    assert_user_error(result, fragment)


def test_generation_on_length_one_and_long_inputs_and_empty_translations(tiny_run, tmp_path):
    run, _ = tiny_run
    model, tokenizer, _ = load_model(run / "best_model.pt")
    import numpy as np
    (tmp_path / "f").mkdir()
    np.save(tmp_path / "f" / "one.npy", np.ones((1, 16), np.float32))
    np.save(tmp_path / "f" / "long.npy", np.random.default_rng(0).standard_normal((3000, 16)))
    (tmp_path / "m.tsv").write_text("id\ttext\none\ta single frame\nlong\tthree thousand\n")
    dataset = FeatureDataset(tmp_path / "m.tsv", tmp_path / "f")
    loader = make_loader(dataset, Collator(tokenizer), 2, shuffle=False)
    settings = GenerationSettings(num_beams=2, max_new_tokens=8)
    result = run_evaluation(model, loader, tokenizer, torch.device("cpu"), settings,
                            show_progress=False)
    assert sorted(result["hypotheses"]) == [0, 1]
    model.t5.lm_head.weight.data.zero_()  # every logit equal: argmax is pad, the text empty
    result = run_evaluation(model, loader, tokenizer, torch.device("cpu"), settings,
                            show_progress=False)
    hyps = [result["hypotheses"][i] for i in range(2)]
    assert hyps == ["", ""]
    assert diversity(hyps)["empty"] == 2
    assert translation_metrics(hyps, [r.text for r in dataset.rows])["bleu"] == 0.0


def test_every_torch_load_is_weights_only():
    """One exception: the conversion command, behind its explicit --trust_pickle flag."""
    offenders, unsafe = [], []
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts or "runs" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                where = f"{path.relative_to(ROOT)}:{number}"
                if path.relative_to(ROOT).as_posix() == "sonar_t5/models/convert_sonar_checkpoint.py":
                    unsafe.append(where)
                else:
                    offenders.append(where)
    assert not offenders, offenders
    assert len(unsafe) == 1, unsafe  # read_trusted(), called only under --trust_pickle
    source = (ROOT / "sonar_t5" / "models" / "convert_sonar_checkpoint.py").read_text()
    assert "if args.trust_pickle:\n        ckpt = read_trusted(args.checkpoint)" in source
    assert source.count("read_trusted(") == 2  # its definition and that one call


def test_ctrl_c_during_a_checkpoint_write_waits_for_the_write(tmp_path):
    from sonar_t5.common.files import atomic_write

    def write(f):
        f.write(b"first half ")
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the write
        f.write(b"second half")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "ckpt.pt", write)
    assert (tmp_path / "ckpt.pt").read_bytes() == b"first half second half"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
