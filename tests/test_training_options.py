"""Training flags beyond the defaults: each one does what --help says."""
import json

import pytest
import torch

from sonar_t5.data.synthetic import make_demo_data
from sonar_t5.models.checkpoint import load_model

from .conftest import train


def history(out):
    return json.loads((out / "training_history.json").read_text())


def test_normalize_max_frames_accumulation_and_eval_batch(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_data, out, "--epochs", "1", "--normalize_features", "--max_frames", "12",
          "--grad_accum_steps", "2", "--eval_batch_size", "5", "--max_target_length", "8")
    model, _, ckpt = load_model(out / "last_model.pt")
    assert model.config.max_frames == 12 and model.config.normalize_features
    assert not torch.equal(model.feature_mean, torch.zeros_like(model.feature_mean))
    assert (model.feature_std > 0).all()
    assert history(out)[0]["step"] == 3  # 6 batches, 2 per optimizer step
    assert ckpt["train_args"]["eval_batch_size"] == 5


def test_patience_stops_a_run_that_does_not_improve(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_data, out, "--epochs", "5", "--patience", "1", "--learning_rate", "0")
    assert [r["epoch"] for r in history(out)] == [1, 2]  # epoch 2 no better: stop
    assert "early stopping: no BLEU gain for 1 epochs" in result.stdout


def test_identity_encoder_on_sonar_embeddings(tmp_path):
    data = make_demo_data(tmp_path / "data", num_train=48, num_val=8, num_test=1,
                          feature_dim=1024, seed=0)
    out = tmp_path / "run"
    train(data, out, "--epochs", "1", "--identity_encoder")
    model, _, _ = load_model(out / "last_model.pt")
    assert model.parameter_counts()["encoder"] == 0
    assert model.encoder.config.kind == "identity"


def test_skip_missing_trains_on_the_rest(tiny_data, tmp_path):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "features" / "train" / "train_00004.npy").unlink()
    result = train(data, tmp_path / "run", "--epochs", "1", "--skip_missing")
    assert "skipping 1 rows" in result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["train_samples"] == 95


@pytest.mark.slow
def test_compile_trains_like_the_eager_model(tiny_data, tmp_path):
    train(tiny_data, tmp_path / "eager", "--epochs", "1")
    result = train(tiny_data, tmp_path / "compiled", "--epochs", "1", "--compile")
    assert "--compile: the first batches of each new shape compile" in result.stdout
    eager, compiled = history(tmp_path / "eager")[0], history(tmp_path / "compiled")[0]
    # Same data order and weights; only dropout draws differ under the compiled graph.
    for key in ("train_loss", "val_loss"):
        assert abs(compiled[key] - eager[key]) < 0.03 * eager[key], (key, compiled, eager)
    model, _, ckpt = load_model(tmp_path / "compiled" / "last_model.pt")  # plain keys
    assert ckpt["train_args"]["compile"]
    assert not any("_orig_mod" in k for k in model.state_dict())


def test_schedule_without_a_budget_is_transformers_linear_schedule():
    from transformers import get_linear_schedule_with_warmup

    from sonar_t5.training.optim import Schedule
    schedule = Schedule(warmup=10, total=100, decay_start=10)
    reference = get_linear_schedule_with_warmup(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 10, 100)
    expected = [reference.lr_lambdas[0](step) for step in range(120)]
    assert [schedule.factor(step) for step in range(120)] == pytest.approx(expected)


def test_schedule_with_a_budget_holds_the_peak_then_decays_over_the_plan():
    from sonar_t5.training.optim import Schedule, epochs_in_budget
    schedule = Schedule(warmup=4)  # total unknown until the first epoch is timed
    assert [schedule.factor(s) for s in (0, 2, 4, 50)] == [0.0, 0.5, 1.0, 1.0]
    schedule.decay_start, schedule.total = 50, 150
    assert [schedule.factor(s) for s in (49, 50, 100, 150, 160)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert epochs_in_budget(600, 61, 30) == 9
    assert epochs_in_budget(600, 900, 30) == 1  # at least the epoch already run
    assert epochs_in_budget(6000, 10, 30) == 30  # --epochs caps it


@pytest.mark.slow
def test_time_budget_runs_the_epochs_that_fit_and_decays_to_zero(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_data, out, "--epochs", "30", "--time_budget", "0.08")  # 4.8 s
    records = history(out)
    _, _, ckpt = load_model(out / "last_model.pt")
    state = ckpt["state"]
    planned = state["planned_epochs"]
    assert f"{planned} epochs of" in result.stdout and "time budget:" in result.stdout
    assert len(records) == planned < 30
    assert planned * records[0]["epoch_time_s"] <= 0.08 * 60 or planned == 1
    assert records[-1]["lr"] == 0.0 and records[0]["lr"] == pytest.approx(1e-3)
    assert state["decay_from"] == [records[0]["step"], records[-1]["step"]]
    # --resume keeps the plan: a finished budget run trains no further epoch.
    train(tiny_data, out, "--epochs", "30", "--time_budget", "0.08", "--resume")
    assert history(out) == records


def test_contrastive_weight_trains_the_heads_and_the_checkpoint_loads(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_data, out, "--epochs", "1", "--contrastive_weight", "0.5")
    model, _, ckpt = load_model(out / "last_model.pt")
    assert model.config.contrastive_dim == 128
    assert model.parameter_counts()["contrastive"] == 2 * (128 * 128 + 128)
    names = [g["name"] for g in ckpt["optimizer"]["param_groups"]]
    assert names[-2:] == ["contrastive", "contrastive_no_decay"]
    first = history(out)[0]
    assert set(first["learning_rates"]) == {"encoder", "bridge", "t5", "contrastive"}


def test_the_perceiver_reads_token_states_by_default_the_projection_the_pooled_embedding():
    from sonar_t5.training.args import parse_args
    data = ["--train_features", "f", "--train_manifest", "m", "--val_features", "f",
            "--val_manifest", "m", "--output_dir", "o"]
    assert parse_args(data).resampler_input == "tokens"
    assert parse_args(data + ["--bridge", "projection"]).resampler_input == "pooled"
    assert parse_args(data + ["--resampler_input", "pooled"]).resampler_input == "pooled"
