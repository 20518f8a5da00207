"""train_sonar_with_t5.py: outputs, resume after SIGKILL, frozen encoder + cache, learning
rates, two processes, and bad flag combinations."""
import json
import math
import signal
import socket
import subprocess
import time

import pytest
import torch

from sonar_t5.models.checkpoint import load_checkpoint, load_model

from .conftest import TINY_MODEL, assert_user_error, data_args, run_script, train
from .processes import start_python

HISTORY_KEYS = {"epoch", "step", "train_loss", "val_loss", "val_bleu", "val_chrf",
                "val_unique_ratio", "cond_gap", "lr", "epoch_time_s", "samples_per_s", "mfu"}


def test_two_epochs_write_every_file_with_documented_keys(tiny_run):
    out, result = tiny_run
    for name in ("config.json", "training_history.json", "best_model.pt", "last_model.pt"):
        assert (out / name).is_file(), name
    history = json.loads((out / "training_history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert all(HISTORY_KEYS <= set(r) for r in history)
    assert all(len(r["samples"]) == 3 for r in history)
    assert all(0 < r["mfu"] < 1 for r in history)  # of the measured peak (sonar_t5/training/mfu.py)
    assert "MFU against a peak of" in result.stdout
    assert f"samples/s, MFU {history[-1]['mfu']:.1%})" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert {"args", "model_config", "parameters"} <= set(config)
    last = load_checkpoint(out / "last_model.pt")
    assert {"optimizer", "scheduler", "scaler", "rng", "epoch"} <= set(last) and last["epoch"] == 2
    model, tok, best = load_model(out / "best_model.pt")
    assert best["best_bleu"] == max(r["val_bleu"] for r in history)
    assert "best validation BLEU" in result.stdout
    assert "python validate_perceiver_model.py --checkpoint" in result.stdout


def test_rerun_into_a_used_directory_refuses(tiny_run, tiny_data):
    out, _ = tiny_run
    before = (out / "best_model.pt").read_bytes()
    result = train(tiny_data, out, "--epochs", "1", check=False)
    assert_user_error(result, "output directory is not empty", "--resume", "--overwrite")
    assert (out / "best_model.pt").read_bytes() == before


def test_overwrite_replaces_the_earlier_run_at_the_first_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "best_model.pt").write_text("an earlier run's")
    (out / "notes.txt").write_text("an earlier run's")
    train(tiny_data, out, "--epochs", "1", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == [
        "best_model.pt", "config.json", "last_model.pt", "results", "training_history.json"]
    # scored by the main process alone, after the others exited
    assert json.loads((out / "results" / "val" / "validation_summary.json").read_text())[
        "num_samples"] == 24
    load_model(out / "best_model.pt")  # the new run's, not the text file


def wait_for(path, predicate, proc, timeout=300):
    start = time.time()
    while time.time() - start < timeout:
        if path.is_file() and predicate(path):
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_sigkill_then_resume_continues_without_repeating_epochs(tiny_data, tmp_path):
    out = tmp_path / "run"
    proc = start_python("train_sonar_with_t5.py", *map(str, data_args(tiny_data)), *TINY_MODEL,
                        "--epochs", "4", "--output_dir", str(out), stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, text=True)
    history = out / "training_history.json"
    wait_for(history, lambda p: len(json.loads(p.read_text())) >= 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = load_checkpoint(out / "last_model.pt")["epoch"]
    assert 1 <= done < 4
    result = train(tiny_data, out, "--epochs", "4", "--resume")
    assert "resuming" in result.stdout
    epochs = [r["epoch"] for r in json.loads(history.read_text())]
    assert epochs == [1, 2, 3, 4]
    assert load_checkpoint(out / "last_model.pt")["epoch"] == 4


def encoder_state(path):
    model, _, _ = load_model(path)
    return model.encoder.state_dict()


def test_frozen_cache_equals_no_cache_and_encoder_is_unchanged(tiny_data, sonar_checkpoint,
                                                               tmp_path):
    common = ["--sonar_checkpoint", sonar_checkpoint, "--freeze_encoder", "--epochs", "1"]
    train(tiny_data, tmp_path / "cache", *common)
    train(tiny_data, tmp_path / "nocache", *common, "--no_encoder_cache")
    a, b = (json.loads((tmp_path / d / "training_history.json").read_text())[0]
            for d in ("cache", "nocache"))
    for key in ("train_loss", "val_loss", "cond_gap"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    original = torch.load(sonar_checkpoint, weights_only=True)["state_dict"]
    for k, v in encoder_state(tmp_path / "cache" / "last_model.pt").items():
        torch.testing.assert_close(v, original[k], rtol=0, atol=0)


def test_unfrozen_encoder_changes_and_learning_rates_keep_their_ratio(tiny_data,
                                                                      sonar_checkpoint, tmp_path):
    train(tiny_data, tmp_path / "run", "--sonar_checkpoint", sonar_checkpoint, "--epochs", "1",
          "--encoder_lr_scale", "0.2")
    original = torch.load(sonar_checkpoint, weights_only=True)["state_dict"]
    trained = encoder_state(tmp_path / "run" / "last_model.pt")
    assert any(not torch.equal(v, original[k]) for k, v in trained.items())
    groups = load_checkpoint(tmp_path / "run" / "last_model.pt")["optimizer"]["param_groups"]
    lrs = {g["name"]: g["initial_lr"] for g in groups}  # the peak LR, before the schedule
    assert lrs["encoder"] == lrs["encoder_no_decay"] == pytest.approx(0.2 * 1e-3)
    assert lrs["bridge"] == lrs["t5"] == lrs["t5_no_decay"] == pytest.approx(1e-3)
    assert {g["name"]: g["weight_decay"] for g in groups}["t5_no_decay"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("frozen", [False, True], ids=["unfrozen", "frozen_cache"])
def test_two_processes_with_torchrun(tiny_data, sonar_checkpoint, tmp_path, frozen):
    out, cache = tmp_path / "ddp", tmp_path / "cache"
    # Frozen: one process builds the encoder cache, the other waits; both read its files.
    flags = (["--sonar_checkpoint", sonar_checkpoint, "--freeze_encoder",
              "--encoder_cache_dir", cache] if frozen
             else ["--resampler_input", "tokens", "--time_budget", "10"])  # plans alike
    result = run_script("-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "train_sonar_with_t5.py", *data_args(tiny_data), *TINY_MODEL,
                        "--epochs", "2", "--output_dir", out, *flags, check=True)
    assert "2 processes" in result.stdout
    if not frozen:  # one plan (the processes' mean epoch time), one schedule
        assert "time budget 10 min: 2 epochs of" in result.stdout
    if frozen:  # built once per split, by whichever process took the lock
        assert result.stdout.count("encoder cache: built") == 2, result.stdout
        assert len([p for p in cache.iterdir() if p.is_dir()]) == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "best_model.pt", "config.json", "last_model.pt", "results", "training_history.json"]
    # scored by the main process alone, after the others exited
    assert json.loads((out / "results" / "val" / "validation_summary.json").read_text())[
        "num_samples"] == 24
    history = json.loads((out / "training_history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert all(0 <= r["val_bleu"] <= 100 and math.isfinite(r["val_loss"]) for r in history)
    assert history[1]["train_loss"] < history[0]["train_loss"]  # the two processes learned


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(flags_by_node, out):
    """Two torchrun launchers (nodes) of one process each, meeting at a c10d rendezvous on the
    loopback address, as two machines of a cluster would. -> [(exit status, stdout, stderr)]"""
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [start_python("-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                          "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id",
                          "loopback", "train_sonar_with_t5.py", *flags, "--output_dir", out,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for flags in flags_by_node]
    outputs = [node.communicate(timeout=300) for node in nodes]
    return [(node.returncode, *output) for node, output in zip(nodes, outputs)]


@pytest.mark.slow
def test_two_nodes_on_the_loopback_address_train_as_one_node_of_two_processes(tiny_data,
                                                                              tmp_path):
    flags = [*map(str, data_args(tiny_data)), *TINY_MODEL, "--epochs", "2",
             "--skip_final_scoring"]
    run_script("-m", "torch.distributed.run", "--nproc_per_node", "2", "train_sonar_with_t5.py",
               *flags, "--output_dir", tmp_path / "one_node", check=True)
    nodes = two_nodes([flags, flags], tmp_path / "two_nodes")
    assert [code for code, _, _ in nodes] == [0, 0], nodes[0][2][-2000:] + nodes[1][2][-2000:]
    one, two = (json.loads((tmp_path / d / "training_history.json").read_text())
                for d in ("one_node", "two_nodes"))
    for key in ("train_loss", "val_loss", "val_bleu"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], rel=1e-6), key
    # a difference of two near-equal losses: their rounding, not a relative 1e-6
    assert [r["cond_gap"] for r in two] == pytest.approx([r["cond_gap"] for r in one], abs=1e-6)
    # a node started with other flags: refused by every process, before any file is written
    nodes = two_nodes([flags, [*flags, "--learning_rate", "2e-3"]], tmp_path / "mismatched")
    assert all(code != 0 for code, _, _ in nodes)
    errors = [line for _, _, stderr in nodes for line in stderr.splitlines()
              if line.startswith("error: ")]
    assert errors and all("the processes were started with different flags: --learning_rate "
                          in line and "on rank 0" in line and "on rank 1" in line
                          for line in errors), errors
    assert not (tmp_path / "mismatched").exists()


@pytest.mark.parametrize("flags, fragment", [
    (["--freeze_encoder"], "--freeze_encoder without --sonar_checkpoint"),
    (["--device", "cuda"], "no CUDA GPU is available"),
    (["--resume"], "nothing to resume"),
    (["--resume", "--overwrite"], "contradict"),
])
def test_bad_flag_combinations(tiny_data, tmp_path, flags, fragment):
    result = train(tiny_data, tmp_path / "run", "--epochs", "1", *flags, check=False)
    assert_user_error(result, fragment)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.slow
def test_demo_runs_and_its_next_commands_work(tmp_path):
    out = tmp_path / "demo"
    result = run_script("train_sonar_with_t5.py", "--demo", "--epochs", "1", "--output_dir", out,
                        check=True)
    commands = [line.split("#")[0].strip() for line in result.stdout.splitlines()
                if line.strip().startswith("python ")]
    assert len(commands) == 5
    for split in ("val", "test"):  # scored when training ended
        assert (out / "results" / split / "validation_summary.json").is_file()
    for command in commands:  # the run compared with itself stands in for a baseline
        run_script(*command.replace("BASELINE_RUN", str(out)).split()[1:], check=True)
    assert (out / "training_curves.png").is_file()
    assert (out / "results_table.md").is_file() and (out / "results_table.tex").is_file()
    assert (out / "validation_results" / "validation_summary.json").is_file()
    assert (out / "analysis.html").stat().st_size > 10_000
