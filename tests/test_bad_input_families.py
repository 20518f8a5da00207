"""Reliability by family: data loss, flag ranges, filesystem errors, resume, data checks,
checkpoint contents, friendly defaults, sharing the CPU. Most cases fail before training."""
import json
import math
import os
import shutil
import signal
import stat
import subprocess
import time
from argparse import Namespace

import numpy as np
import pytest
import torch

from sonar_t5.common.cli import FLAG_RANGES, check_flag_ranges
from sonar_t5.common.cpu import wait_politely_if_shared
from sonar_t5.common.errors import UserError
from sonar_t5.data.dataset import FeatureDataset
from sonar_t5.data.features import load_features
from sonar_t5.models.checkpoint import load_checkpoint, load_model

from .conftest import (Payload, assert_user_error, data_args, run_patched, run_script,
                       train, train_argv)
from .processes import run_python, start_python


def popen_train(data, out, *extra):
    return start_python("train_sonar_with_t5.py", *train_argv(data, out, *extra),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(predicate, proc, timeout=300):
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read()[-2000:]}")
        if time.time() - start > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


def history(out):
    return json.loads((out / "training_history.json").read_text())


# -- 1. data loss ---------------------------------------------------------------------------
@pytest.mark.slow
def test_overwrite_then_ctrl_c_in_the_first_epoch_keeps_the_earlier_run(tiny_run, tiny_data,
                                                                        tmp_path):
    earlier, _ = tiny_run
    out = tmp_path / "run"
    shutil.copytree(earlier, out)
    (out / "validation_results").mkdir()
    (out / "validation_results" / "validation_summary.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    proc = popen_train(tiny_data, out, "--epochs", 3, "--batch_size", 2, "--overwrite")
    wait_until(lambda: (out / ".replaced_run").is_dir(), proc)
    # the user adds files meanwhile: a new name, and one the earlier run had (now set aside)
    (out / "notes.md").write_text("the user's notes")
    (out / "validation_results").mkdir()
    (out / "validation_results" / "mine.txt").write_text("the user's")
    time.sleep(0.5)  # training the first epoch
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "the earlier run is back" in stdout and "Traceback" not in stderr
    assert "the earlier run's validation_results is back as validation_results.earlier_run" \
        in stdout
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == \
        {**before, "notes.md": b"the user's notes"}
    assert (out / "validation_results" / "mine.txt").read_text() == "the user's"
    assert (out / "validation_results.earlier_run" / "validation_summary.json").read_text() == "{}"
    assert not (out / ".replaced_run").exists()


@pytest.mark.slow
def test_a_second_run_into_a_running_directory_is_refused(tiny_data, tmp_path):
    out = tmp_path / "run"
    first = popen_train(tiny_data, out, "--epochs", 6, "--batch_size", 2)
    wait_until(lambda: (out / ".lock").is_file(), first)
    second = run_script("train_sonar_with_t5.py", *train_argv(tiny_data, out, "--epochs", 1,
                                                             "--overwrite"))
    assert_user_error(second, "the output directory is in use by another run (pid")
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    assert [r["epoch"] for r in history(out)] == [1, 2, 3, 4, 5, 6]
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_plot_on_a_full_disk_keeps_the_good_png(tiny_run, tmp_path):
    run, _ = tiny_run
    png = tmp_path / "curves.png"
    run_script("plot_training_curves.py", "--checkpoint_dir", run, "--output", png, check=True)
    good = png.read_bytes()
    patch = ("import errno, matplotlib.figure\n"
             "def savefig(self, f, **k):\n"
             "    f.write(b'half a png')\n"
             "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
             "matplotlib.figure.Figure.savefig = savefig\n")
    code = (f"import sys; sys.argv = ['plot_training_curves.py', '--checkpoint_dir', "
            f"{str(run)!r}, '--output', {str(png)!r}]\n{patch}"
            "import plot_training_curves; plot_training_curves.main()")
    result = run_python("-c", code)
    assert_user_error(result, "No space left on device", "the previous file is unchanged")
    assert png.read_bytes() == good
    assert not list(tmp_path.glob(".*tmp"))


# -- 2. flag ranges -------------------------------------------------------------------------
def out_of_range(allowed):
    """Values each range refuses: below, above, and not finite."""
    values = [math.nan]
    if allowed.low != -math.inf:
        values.append(allowed.low if allowed.low_open else allowed.low - 1)
    if allowed.high != math.inf:
        values.append(allowed.high if allowed.high_open else allowed.high + 1)
    return values


@pytest.mark.parametrize("flag", sorted(FLAG_RANGES))
def test_every_range_in_the_table_is_checked(flag):
    for value in out_of_range(FLAG_RANGES[flag]):
        with pytest.raises(UserError, match=rf"^--{flag} must be .*\(got {value}\)"):
            check_flag_ranges(Namespace(**{flag: value}))
    check_flag_ranges(Namespace(**{flag: None}))  # unset: falls back elsewhere


def test_every_numeric_flag_of_the_scripts_is_in_the_table():
    from test_perceiver_architecture import build_parser as build_smoke_test_parser
    from sonar_t5.training.args import build_parser
    from validate_perceiver_model import build_parser as build_validate_parser
    numeric = {a.dest for parser in (build_parser(), build_validate_parser(),
                                     build_smoke_test_parser())
               for a in parser._actions if a.type in (int, float)}
    assert numeric <= set(FLAG_RANGES), numeric - set(FLAG_RANGES)


@pytest.mark.parametrize("flags, fragment", [
    (["--max_grad_norm", "-1"], "--max_grad_norm must be above 0 (got -1.0)"),
    (["--learning_rate", "nan"], "--learning_rate must be at least 0 (got nan)"),
    (["--num_beams", "0"], "--num_beams must be at least 1"),
    (["--encoder_d_model", "12"], "--encoder_d_model 12 is not a multiple of 8"),
    (["--eval_batch_size", "-1"], "--eval_batch_size must be at least 1"),
    (["--test_manifest", "x.tsv"], "--test_features and --test_manifest go together"),
])
def test_bad_training_flags_stop_before_any_work(tiny_data, tmp_path, flags, fragment):
    result = run_script("train_sonar_with_t5.py", *train_argv(tiny_data, tmp_path / "o", *flags))
    assert_user_error(result, fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, fragment", [
    (["--test_features", "TRAIN", "--test_manifest", "MISSING"], "MISSING"),
    (["--test_features", "OTHER_DIM", "--test_manifest", "TEST"],
     "feature dimension 8, expected 16 like the training features"),
    (["--test_features", "ONE_ODD", "--test_manifest", "TEST"],  # its last file alone
     "feature dimension 8, expected 16 like the training features, LAST"),
    (["--bridge", "projection", "--num_heads", "7"], "--num_heads 7 does not divide the T5 width 128"),
    (["--vocab_size", "16"], "--vocab_size 16 is smaller than the training texts' characters"),
    (["--vocab_size", "5000"], "--vocab_size 5000 is more than the training texts support: "
                               "at most 209 pieces"),
])
def test_flags_that_depend_on_the_model_or_data_fail_before_training(tiny_data, tmp_path,
                                                                    flags, fragment):
    files = sorted((tiny_data / "features" / "test").glob("*.npy"))
    if "OTHER_DIM" in flags:  # a test split of other features: 8-d copies of its files
        other = tmp_path / "other"
        other.mkdir()
        for path in files:
            np.save(other / path.name, np.load(path)[:, :8])
    if "ONE_ODD" in flags:
        odd = shutil.copytree(tiny_data / "features" / "test", tmp_path / "odd")
        np.save(odd / files[-1].name, np.load(files[-1])[:, :8])
    places = {"TRAIN": tiny_data / "features" / "train", "MISSING": tmp_path / "missing.tsv",
              "OTHER_DIM": tmp_path / "other", "TEST": tiny_data / "manifests" / "test.tsv",
              "ONE_ODD": tmp_path / "odd", "LAST": tmp_path / "odd" / files[-1].name}
    flags = [str(places.get(f, f)) for f in flags]
    fragment = str(places.get(fragment, fragment)).replace("LAST", str(places["LAST"]))
    result = run_script("train_sonar_with_t5.py", *train_argv(tiny_data, tmp_path / "o", *flags))
    assert_user_error(result, fragment)
    assert not (tmp_path / "o").exists()


# -- 3. filesystem errors -------------------------------------------------------------------
def test_output_paths_that_cannot_be_used(tiny_data, tiny_run, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, fragment in ((a_file, "cannot use the output directory"),
                          (a_file / "run", "cannot use the output directory")):
        result = run_script("train_sonar_with_t5.py", *train_argv(tiny_data, out))
        assert_user_error(result, fragment, str(out))
    assert a_file.read_text() == "x"
    run, _ = tiny_run
    validate = ["validate_perceiver_model.py", "--checkpoint", run / "best_model.pt",
                "--features", tiny_data / "features" / "test", "--manifest",
                tiny_data / "manifests" / "test.tsv"]
    assert_user_error(run_script(*validate, "--output", a_file), "--output is a file")
    assert_user_error(run_script(*validate, "--output", a_file / "v"), "lies under a file")
    plot = ["plot_training_curves.py", "--checkpoint_dir", run]
    assert_user_error(run_script(*plot, "--output", tmp_path / "curves.xyz"),
                      "unknown image extension ('.xyz')", ".png")
    assert_user_error(run_script(*plot, "--output", tmp_path / "missing" / "c.png"),
                      "--output's directory does not exist")


# -- 4. resume --------------------------------------------------------------------------------
def test_resume_refuses_changed_model_flags_and_says_what_epochs_does(tiny_run, tiny_data,
                                                                       tmp_path):
    earlier, _ = tiny_run
    out = tmp_path / "run"
    shutil.copytree(earlier, out)
    config = (out / "config.json").read_bytes()
    argv = train_argv(tiny_data, out, "--resampler_input", "tokens", "--resume")
    changed = run_script("train_sonar_with_t5.py", *argv, "--epochs", 3, "--learning_rate",
                         "5e-4", "--num_latents", "16")
    assert_user_error(changed, "--resume with settings that differ from the run's",
                      "--learning_rate 0.0005 (the run: 0.001)", "--num_latents 16 (the run: 8)")
    assert (out / "config.json").read_bytes() == config  # a failed resume rewrites nothing
    longer = run_script("train_sonar_with_t5.py", *argv, "--epochs", 3, check=True)
    assert "--epochs 3 (the run had 2): the learning-rate schedule now decays" in longer.stdout
    assert [r["epoch"] for r in history(out)] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["args"]["epochs"] == 3


def test_resume_from_a_checkpoint_without_training_state(tiny_run, tiny_data, tmp_path):
    earlier, _ = tiny_run
    out = tmp_path / "run"
    shutil.copytree(earlier, out)
    shutil.copy(out / "best_model.pt", out / "last_model.pt")
    result = run_script("train_sonar_with_t5.py", *train_argv(
        tiny_data, out, "--resampler_input", "tokens", "--resume"))
    assert_user_error(result, "cannot resume: the checkpoint has no training state")


RUN = ("--epochs", 4, "--batch_size", 2)  # 48 batches an epoch: time to stop in the middle


def interrupted_then_resumed(data, out, stop_signal):
    proc = popen_train(data, out, *RUN)
    wait_until(lambda: (out / "training_history.json").is_file(), proc)
    time.sleep(0.4)  # into epoch 2
    proc.send_signal(stop_signal)
    stdout, stderr = proc.communicate(timeout=120)
    stopped = load_checkpoint(out / "last_model.pt")["state"]
    assert stopped["epoch"] >= 1 and stopped["epoch"] < 4
    resumed = run_script("train_sonar_with_t5.py", *train_argv(data, out, *RUN, "--resume"),
                         check=True)
    return proc.returncode, stdout, stderr, resumed


METRICS = ("train_loss", "val_loss", "val_bleu", "val_chrf", "cond_gap", "step")


@pytest.mark.slow
def test_ctrl_c_or_sigterm_then_resume_equals_the_uninterrupted_run(tiny_data, tmp_path):
    train(tiny_data, tmp_path / "whole", *RUN)
    whole = [{k: r[k] for k in METRICS} for r in history(tmp_path / "whole")]
    for stop, code, said in ((signal.SIGINT, 130, "interrupted in epoch"),
                             (signal.SIGTERM, 143, "terminated (SIGTERM) in epoch")):
        out = tmp_path / stop.name
        returncode, stdout, stderr, _ = interrupted_then_resumed(tiny_data, out, stop)
        assert returncode == code, stderr[-2000:]
        assert said in stdout and "Traceback" not in stderr
        resumed = [{k: r[k] for k in METRICS} for r in history(out)]
        assert resumed == whole, stop.name


@pytest.mark.slow
def test_a_second_ctrl_c_exits_cleanly(tiny_data, tmp_path):
    out = tmp_path / "run"
    proc = popen_train(tiny_data, out, "--epochs", 3, "--batch_size", 2)
    wait_until(lambda: (out / "training_history.json").is_file(), proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-2000:]
    load_model(out / "last_model.pt")


@pytest.mark.slow
def test_after_a_kill_the_earlier_run_comes_back_and_failed_starts_do_not_block(tiny_run,
                                                                               tiny_data,
                                                                               tmp_path):
    earlier, data = tiny_run[0], tiny_data
    out = tmp_path / "run"
    shutil.copytree(earlier, out)
    best = (out / "best_model.pt").read_bytes()
    proc = popen_train(data, out, "--epochs", 3, "--batch_size", 2, "--overwrite")
    wait_until(lambda: (out / ".replaced_run").is_dir(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = run_script("train_sonar_with_t5.py", *train_argv(data, out, "--epochs", 1))
    assert "note: put back the earlier run" in again.stdout
    assert_user_error(again, "output directory is not empty")
    assert (out / "best_model.pt").read_bytes() == best and not (out / ".replaced_run").exists()

    fresh = tmp_path / "fresh"  # a start that fails in its first epoch leaves nothing behind
    broken = tmp_path / "data"
    shutil.copytree(data, broken)
    victim = sorted((broken / "features" / "train").glob("*.npy"))[5]
    good = victim.read_bytes()
    victim.write_bytes(b"not a numpy file")
    assert_user_error(train(broken, fresh, "--epochs", 1, check=False), "cannot read feature file")
    assert not fresh.exists()
    victim.write_bytes(good)
    train(broken, fresh, "--epochs", 1)


# -- 5. data checks ------------------------------------------------------------------------
def test_feature_dimension_is_decided_by_the_majority(tmp_path):
    (tmp_path / "f").mkdir()
    rows = ["id\ttext"]
    for i in range(6):
        np.save(tmp_path / "f" / f"s{i}.npy", np.ones((3, 12 if i == 0 else 8), np.float32))
        rows.append(f"s{i}\tsentence {i}")
    (tmp_path / "m.tsv").write_text("\n".join(rows) + "\n")
    ds = FeatureDataset(tmp_path / "m.tsv", tmp_path / "f")
    assert ds.feature_dim == 8
    assert ds[3]["inputs"].shape == (3, 8)
    with pytest.raises(UserError, match=r"feature dimension 12, expected 8.*s0\.npy"):
        ds[0]


@pytest.mark.parametrize("array, fragment", [
    (np.float32(3.0), "feature array has shape ()"),
    (np.zeros((5, 0), np.float32), "feature vectors have zero dimensions"),
])
def test_degenerate_arrays_are_one_line(tmp_path, array, fragment):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_features(tmp_path / "x.npy")


def test_ids_stay_inside_the_features_directory_and_commas_are_named(tmp_path):
    (tmp_path / "val").mkdir()
    np.save(tmp_path / "secret.npy", np.ones((3, 16), np.float32))
    (tmp_path / "m.tsv").write_text("id\ttext\n../secret\tleaked from another split\n")
    with pytest.raises(UserError, match=r"'\.\./secret' points outside the features directory.*m\.tsv:2"):
        FeatureDataset(tmp_path / "m.tsv", tmp_path / "val")
    (tmp_path / "c.csv").write_text("id,text\na,hello\n")
    with pytest.raises(UserError, match="not tab-separated: line 1 has commas and no tabs"):
        FeatureDataset(tmp_path / "c.csv", tmp_path / "val")


@pytest.mark.slow
def test_a_sample_too_long_for_memory_is_named_with_the_fix(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    np.save(data / "features" / "train" / "train_00007.npy",
            np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32))
    patch = ("import torch\nfrom sonar_t5.models.sonar_t5 import SonarT5\n_prefix = SonarT5.prefix\n"
             "def prefix(self, inputs, input_mask, encoded=False):\n"
             "    if inputs.shape[1] > 1000:\n"
             "        raise RuntimeError('[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
             "can\\'t allocate memory: you tried to allocate 214748364800 bytes.')\n"
             "    return _prefix(self, inputs, input_mask, encoded)\n"
             "SonarT5.prefix = prefix\n")
    result = run_patched(patch, train_argv(data, tmp_path / "run", "--epochs", 1))
    assert_user_error(result, "out of memory on a batch", "'train_00007' with 2000 frames",
                      "--max_frames")


# -- 6. checkpoint contents ----------------------------------------------------------------
def test_checkpoints_that_are_not_whole(tiny_run, tiny_data, tmp_path):
    run, _ = tiny_run
    validate = ["validate_perceiver_model.py", "--features", tiny_data / "features" / "test",
                "--manifest", tiny_data / "manifests" / "test.tsv", "--output", tmp_path / "v"]
    torch.save({"kind": "sonar_t5"}, tmp_path / "bare.pt")
    ckpt = torch.load(run / "best_model.pt", weights_only=True)
    ckpt["tokenizer"] = torch.zeros(50, dtype=torch.uint8) + 7
    torch.save(ckpt, tmp_path / "bad_tokenizer.pt")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4000))
    for name, fragment in (("bare.pt", "incomplete sonar-t5 checkpoint (no model_config"),
                           ("bad_tokenizer.pt", "SentencePiece tokenizer is corrupt"),
                           ("random.pt", "not a readable checkpoint")):
        result = run_script(*validate, "--checkpoint", tmp_path / name)
        line = assert_user_error(result, fragment)
        assert "Python objects" not in line and "weights_only" not in line


def test_a_t5_directory_with_bad_weights_is_one_line_and_runs_no_code(tiny_data, tmp_path):
    from transformers import T5ForConditionalGeneration
    from sonar_t5.models.t5_decoder import preset_config
    from sonar_t5.models.tokenizer import train_tokenizer
    tokenizer = train_tokenizer([r for r in open(tiny_data / "manifests" / "train.tsv")], 200)
    t5_dir = tmp_path / "t5"
    T5ForConditionalGeneration(preset_config("t5-tiny", tokenizer.vocab_size)).save_pretrained(t5_dir)
    (t5_dir / "spiece.model").write_bytes(tokenizer.model_bytes)
    weights = t5_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    argv = [*map(str, data_args(tiny_data)), "--t5_model", str(t5_dir), "--epochs", "1",
            "--device", "cpu", "--num_workers", "0", "--output_dir", str(tmp_path / "run")]
    assert_user_error(run_script("train_sonar_with_t5.py", *argv),
                      f"cannot load T5 model '{t5_dir}'")
    weights.unlink()
    marker = tmp_path / "payload_ran"
    torch.save({"x": Payload(marker)}, t5_dir / "pytorch_model.bin")
    line = assert_user_error(run_script("train_sonar_with_t5.py", *argv),
                             f"cannot load T5 model '{t5_dir}'")
    assert not marker.exists() and "weights_only" not in line


# -- 7. friendly defaults --------------------------------------------------------------------
def test_outputs_are_readable_by_colleagues_and_warnings_are_one_line(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "features" / "train" / "train_00004.npy").unlink()
    out = tmp_path / "run"
    result = train(data, out, "--epochs", 1, "--skip_missing")
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("config.json", "best_model.pt", "last_model.pt", "training_history.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~mask, name
    warnings = [line for line in result.stderr.splitlines() if "skipping 1 rows" in line]
    assert warnings and all(line.startswith("warning: ") for line in warnings)
    assert "UserWarning" not in result.stderr and "warnings.warn" not in result.stderr
    (data / "features" / "test" / "test_00001.npy").unlink()
    validate = run_script("validate_perceiver_model.py", "--checkpoint", out / "best_model.pt",
                          "--features", data / "features" / "test", "--manifest",
                          data / "manifests" / "test.tsv", "--output", tmp_path / "v")
    line = assert_user_error(validate, "1 of 24 feature files are missing")
    assert "--skip_missing" not in line


# -- 8. sharing the CPU ----------------------------------------------------------------------
def test_openmp_waits_passively_only_when_the_cpu_is_shared(monkeypatch):
    import sonar_t5.common.cpu as cpu
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "SONAR_T5_CPU_SHARING"):
        monkeypatch.delenv(name, raising=False)
    assert cpu.other_runnable_threads() >= 0  # read from /proc/loadavg, this process excluded
    monkeypatch.setattr(cpu, "other_runnable_threads", lambda: 0)
    assert not wait_politely_if_shared() and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setattr(cpu, "other_runnable_threads", lambda: 2)
    monkeypatch.setenv("SONAR_T5_CPU_SHARING", "off")
    assert not wait_politely_if_shared() and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.delenv("SONAR_T5_CPU_SHARING")
    assert wait_politely_if_shared() and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice wins
    assert not wait_politely_if_shared() and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
