"""The research workflow's inputs and logs: train_log.jsonl, TensorBoard, --report_to,
--config files."""
import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sonar_t5.common.errors import UserError
from sonar_t5.training.args import parse_args

from .conftest import ROOT, run_patched, train_argv

DATA = ["--train_features", "f", "--train_manifest", "m", "--val_features", "f",
        "--val_manifest", "m"]


def steps_logged(out):
    return [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_step_log_and_tensorboard_continue_after_a_kill_without_duplicates(tiny_data, tmp_path):
    out = tmp_path / "run"
    argv = train_argv(tiny_data, out, "--log_every", "2", "--report_to", "tensorboard")
    # 96 samples in batches of 16: 6 steps an epoch, a line every 2 steps.
    first = run_patched("", argv + ["--epochs", "1"])
    assert first.returncode == 0, first.stderr[-2000:]
    assert steps_logged(out) == [2, 4, 6]
    record = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert set(record) == {"step", "epoch", "loss", "learning_rates", "grad_norm",
                           "samples_per_s", "mfu", "nonfinite_steps"}
    assert 0 < record["mfu"] < 1
    assert set(record["learning_rates"]) == {"encoder", "bridge", "t5"}
    assert record["epoch"] == 1 and record["loss"] > 0 and record["grad_norm"] > 0

    kill_after_step_10 = (  # logged past the checkpoint of step 6, then SIGKILL
        "import os, signal, sonar_t5.training.tracking as t\n"
        "log = t.Tracker.log_step\n"
        "def log_then_die(self, record):\n"
        "    log(self, record)\n"
        "    if record['step'] == 10: os.kill(os.getpid(), signal.SIGKILL)\n"
        "t.Tracker.log_step = log_then_die\n")
    killed = run_patched(kill_after_step_10, argv + ["--epochs", "2", "--resume"])
    assert killed.returncode == -9
    assert steps_logged(out) == [2, 4, 6, 8, 10]
    resumed = run_patched("", argv + ["--epochs", "2", "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert steps_logged(out) == [2, 4, 6, 8, 10, 12]  # 8 and 10 once, from the resumed run

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8, 10, 12]
    lines = (out / "train_log.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in lines]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(losses)
    history = json.loads((out / "training_history.json").read_text())
    assert [e.value for e in events.Scalars("val/bleu")] == pytest.approx(
        [r["val_bleu"] for r in history])
    assert "train/lr/bridge" in events.Tags()["scalars"]


def test_report_to_a_tracker_that_is_not_installed_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(UserError, match="--report_to wandb: wandb is not installed.*pip install "
                                        "wandb"):
        parse_args(DATA + ["--output_dir", "x", "--report_to", "tensorboard", "wandb"])


def test_config_file_under_the_command_line_and_over_the_demo(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("demo: true\nlearning_rate: 1e-4\nepochs: 3\nreport_to: [tensorboard]\n"
                      "freeze_encoder: false\nhidden_dim: 128\n")
    args = parse_args(["--config", str(config), "--epochs", "5"])
    assert args.epochs == 5  # the command line wins
    assert args.learning_rate == 1e-4 and args.hidden_dim == 128  # the file, over --demo's
    assert args.report_to == ["tensorboard"]
    assert args.t5_model == "t5-tiny" and args.output_dir == "runs/demo"  # --demo's defaults


@pytest.mark.parametrize("text, fragment", [
    ("epochs: 3\nlearnig_rate: 0.001\n", "unknown key 'learnig_rate', {path}:2"),
    ("epochs: three\n", "'epochs' must be an integer (got 'three'), {path}:1"),
    ("batch_size: 16\nfreeze_encoder: 1\n", "'freeze_encoder' must be true or false"),
    ("bridge: transformer\n", "'bridge' must be one of perceiver, projection"),
    ("- epochs\n", "not a mapping of flag: value"),
    ("epochs: [3\n", "not valid YAML"),
])
def test_bad_config_files_are_one_line(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as error:
        parse_args(DATA + ["--output_dir", "x", "--config", str(path)])
    assert fragment.format(path=path) in str(error.value)


@pytest.mark.parametrize("name", ["quick_test", "frozen", "unfrozen", "demo", "scratch_decoder"])
def test_shipped_configs_reproduce_the_original_guides_runs(name):
    args = parse_args(["--config", str(ROOT / "configs" / f"{name}.yaml"), *DATA])
    expected = {"quick_test": dict(epochs=2, batch_size=8, freeze_encoder=False),
                "frozen": dict(epochs=30, batch_size=16, learning_rate=1e-4, freeze_encoder=True),
                "unfrozen": dict(epochs=30, batch_size=16, learning_rate=1e-4,
                                 encoder_lr_scale=0.2, freeze_encoder=False),
                "demo": dict(demo=True, epochs=12, t5_model="t5-tiny"),
                # the recipe: its file and t5-tiny's defaults; the vocabulary and warm-up are
                # chosen when the data is read (1,000 and 200 on the benchmark's text:
                # tests/test_defaults.py)
                "scratch_decoder": dict(t5_model="t5-tiny", time_budget=15, learning_rate=1e-3,
                                        batch_size=32, hidden_dim=128, num_latents=16,
                                        num_heads=4, encoder_d_model=128, encoder_layers=2,
                                        normalize_features=True, vocab_size=None,
                                        warmup_steps=None)}[name]
    assert {k: getattr(args, k) for k in expected} == expected


@pytest.mark.slow
def test_logs_of_a_run_killed_before_its_first_checkpoint_do_not_block_the_next(tiny_data,
                                                                                tmp_path):
    out = tmp_path / "run"
    argv = train_argv(tiny_data, out, "--log_every", "2", "--report_to", "tensorboard",
                      "--epochs", "1")
    kill_at_step_2 = ("import os, signal, sonar_t5.training.tracking as t\n"
                      "log = t.Tracker.log_step\n"
                      "def log_then_die(self, record):\n"
                      "    log(self, record)\n"
                      "    os.kill(os.getpid(), signal.SIGKILL)\n"
                      "t.Tracker.log_step = log_then_die\n")
    assert run_patched(kill_at_step_2, argv).returncode == -9
    assert sorted(p.name for p in out.iterdir()) == [".lock", ".run_logs", "tensorboard",
                                                     "train_log.jsonl"]
    again = run_patched("", argv)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "removed train_log.jsonl, tensorboard" in again.stdout
    assert steps_logged(out) == [2, 4, 6]


def test_resume_may_change_logging_but_not_what_the_run_learns():
    from sonar_t5.training.state import TRAINING_STATE, check_resume
    run = parse_args(DATA + ["--output_dir", "x"])
    ckpt = {**{key: None for key in TRAINING_STATE}, "train_args": vars(run)}
    logging = parse_args(DATA + ["--output_dir", "x", "--resume", "--log_every", "10",
                                 "--report_to", "tensorboard"])
    assert check_resume(logging, ckpt, "last_model.pt") is None
    learning = parse_args(DATA + ["--output_dir", "x", "--resume", "--learning_rate", "0.5"])
    with pytest.raises(UserError, match="--learning_rate 0.5 \\(the run: 0.0001\\)"):
        check_resume(learning, ckpt, "last_model.pt")
