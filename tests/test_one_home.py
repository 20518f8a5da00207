"""One home per idea: a third bridge is one register_bridge() call, a new metric one change in
sonar_t5/evaluation/metrics.py; old checkpoints and files keep loading under the new names."""
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sonar_t5.models import FeatureEncoder, FeatureEncoderConfig, SonarT5Config
from sonar_t5.models.checkpoint import load_checkpoint
from sonar_t5.models.encoders import load_encoder
from sonar_t5.models.feature_encoder import save_feature_encoder

from .conftest import assert_user_error, train_argv
from .processes import run_python


def run_with(patch, script, *argv):
    """Run one of the scripts in a fresh interpreter after `patch` (Python source) ran: what
    a user's own module registering a bridge or a metric would do before the script runs."""
    code = (f"import sys; sys.argv = [{script!r}] + {list(map(str, argv))!r}\n{patch}\n"
            f"import runpy; runpy.run_path({script!r}, run_name='__main__')")
    return run_python("-c", code)


def validate_with(patch, run, data, output, *extra):
    return run_with(patch, "validate_perceiver_model.py", "--checkpoint", run / "best_model.pt",
                    "--features", data / "features" / "val", "--manifest",
                    data / "manifests" / "val.tsv", "--output", output, *extra)


TOY_BRIDGE = '''
import torch
from torch import nn
from sonar_t5.models import Bridge, register_bridge

class MeanBridge(nn.Module):
    """The mean of the encoder states, projected to T5's width, plus a learned vector per
    prefix position."""
    def __init__(self, input_dim, output_dim, num_latents):
        super().__init__()
        self.proj = nn.Linear(input_dim, output_dim)
        self.positions = nn.Parameter(torch.zeros(num_latents, output_dim))

    def forward(self, states, mask):
        weights = mask.unsqueeze(-1).to(states.dtype)
        mean = (states * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.proj(mean).unsqueeze(1) + self.positions

register_bridge("mean", Bridge(
    "Mean bridge", lambda config, d_model, input_dim: MeanBridge(input_dim, d_model,
                                                                 config.num_latents),
    default_input="pooled", no_decay=("positions",)))
'''


@pytest.mark.slow
def test_a_third_bridge_registered_in_this_file_trains_validates_and_tables(tiny_data,
                                                                          tmp_path):
    run = tmp_path / "mean_bridge"
    trained = run_with(TOY_BRIDGE, "train_sonar_with_t5.py",
                       *train_argv(tiny_data, run, "--bridge", "mean", "--epochs", 1))
    assert trained.returncode == 0, trained.stderr[-2000:]
    config = json.loads((run / "config.json").read_text())["model_config"]
    assert (config["bridge"], config["resampler_input"]) == ("mean", "pooled")  # its default
    groups = {g["name"]: len(g["params"])
              for g in load_checkpoint(run / "last_model.pt")["optimizer"]["param_groups"]}
    assert (groups["bridge"], groups["bridge_no_decay"]) == (1, 2)  # positions: no decay

    validation = tmp_path / "validation"
    validated = validate_with(TOY_BRIDGE, run, tiny_data, validation)
    assert validated.returncode == 0, validated.stderr[-2000:]
    assert json.loads((validation / "validation_summary.json").read_text())["num_samples"] == 24
    tabled = run_with(TOY_BRIDGE, "plot_training_curves.py", "--table", run, validation,
                      "--output", tmp_path / "results")
    assert tabled.returncode == 0, tabled.stderr[-2000:]
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert len([line for line in lines if line.startswith("| mean_bridge ")]) == 2
    # the bridge and its input are the same in both rows: said once, under the table
    shared = [line for line in lines if line.startswith("- All rows: ")]
    assert len(shared) == 1 and "bridge mean, input pooled" in shared[0], lines
    refused = validate_with(TOY_BRIDGE, run, tiny_data, tmp_path / "plots", "--attention_plot", 1)
    assert_user_error(refused, "needs a bridge with an attention map (perceiver)")


TOY_METRIC = '''
import sonar_t5.evaluation.metrics as metrics
measured = metrics.translation_metrics
def with_toy(hypotheses, references):
    return {**measured(hypotheses, references), "toy": 0.5}
metrics.translation_metrics = with_toy
'''


@pytest.mark.slow
def test_a_metric_added_in_one_place_reaches_every_consumer(tiny_data, tmp_path):
    run = tmp_path / "run"
    trained = run_with(TOY_METRIC, "train_sonar_with_t5.py",
                       *train_argv(tiny_data, run, "--epochs", 1, "--report_to", "tensorboard"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "unique 4%  toy 0.5  cond_gap" in trained.stdout  # the epoch line
    assert json.loads((run / "training_history.json").read_text())[0]["val_toy"] == 0.5
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("val/toy")] == [0.5]  # the trackers
    validation = tmp_path / "validation"
    validated = validate_with(TOY_METRIC, run, tiny_data, validation)
    assert validated.returncode == 0, validated.stderr[-2000:]
    assert "toy: 0.500" in validated.stdout
    assert json.loads((validation / "validation_summary.json").read_text())["toy"] == 0.5
    tabled = run_with(TOY_METRIC, "plot_training_curves.py", "--table", run, validation,
                      "--output", tmp_path / "results")
    assert tabled.returncode == 0, tabled.stderr[-2000:]
    header, _, *rows = (tmp_path / "results.md").read_text().split("\n\n")[0].splitlines()
    column = [c.strip() for c in header.split("|")].index("toy")
    # a metric without a display definition: 3 decimals in tables
    assert [row.split("|")[column].strip() for row in rows] == ["0.500", "0.500"]


def test_old_names_still_load(tmp_path):
    """Encoder files, encoder configs and model configs written under the old names."""
    encoder = FeatureEncoder(FeatureEncoderConfig(input_dim=16, d_model=32, num_layers=1,
                                                  num_heads=4))
    path = tmp_path / "encoder.pt"
    save_feature_encoder(encoder, path)
    assert torch.load(path, weights_only=True)["kind"] == "feature_encoder"
    old = torch.load(path, weights_only=True)
    torch.save({**old, "kind": "sonar_encoder"}, path)  # what feature encoder files said
    assert isinstance(load_encoder(path), FeatureEncoder)
    identity = FeatureEncoderConfig.from_dict({"kind": "feature", "identity": True,
                                               "input_dim": 1024})
    assert identity.kind == "identity" and identity.is_identity
    config = SonarT5Config.from_dict({"encoder": {}, "t5": {}, "bridge": "perceiver"})
    assert config.resampler_input == "pooled"  # checkpoints without it read pooled
    assert SonarT5Config(encoder={}, t5={}, bridge="projection").resampler_input == "pooled"
    assert SonarT5Config(encoder={}, t5={}).resampler_input == "tokens"  # the bridge's own


def test_a_projection_bridge_saved_when_its_latents_were_expanders_loads(tmp_path):
    """Checkpoints and exports (safetensors) from before the rename."""
    import safetensors.torch

    from sonar_t5.models.projection_bridge import ProjectionBridge
    torch.manual_seed(0)
    saved, fresh = (ProjectionBridge(input_dim=16, hidden_dim=8, output_dim=8, num_latents=4,
                                     num_heads=2) for _ in range(2))
    old = {k.replace("latents", "expanders"): v for k, v in saved.state_dict().items()}
    assert "expanders" in old and "latents" not in old
    fresh.load_state_dict(old)  # strict: every key matched
    assert torch.equal(fresh.latents, saved.latents)
    model = torch.nn.Sequential(fresh)
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({f"0.{k}": v.contiguous() for k, v in old.items()}, path)
    torch.nn.init.zeros_(fresh.latents)
    safetensors.torch.load_model(model, path)
    assert torch.equal(fresh.latents, saved.latents)


def test_the_old_name_of_a_renamed_flag_still_works_everywhere(tiny_run, tiny_data, tmp_path):
    """--encoder_dim is --encoder_d_model now: on a command line, in a config file, and in
    the train_args of a checkpoint or config.json written before."""
    from sonar_t5.common.schemas import read_run_config
    from sonar_t5.models.checkpoint import load_model
    from sonar_t5.training.args import parse_args
    data = [str(x) for x in train_argv(tiny_data, tmp_path / "run")[:8]]
    data += ["--output_dir", str(tmp_path / "run")]
    assert parse_args([*data, "--encoder_dim", "64"]).encoder_d_model == 64
    config = tmp_path / "old.yaml"
    config.write_text("encoder_dim: 48\n")
    assert parse_args([*data, "--config", str(config)]).encoder_d_model == 48
    run, _ = tiny_run
    old = torch.load(run / "best_model.pt", weights_only=True)
    old["train_args"]["encoder_dim"] = old["train_args"].pop("encoder_d_model")
    torch.save(old, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt")[2]["train_args"]["encoder_d_model"] == 32
    written = json.loads((run / "config.json").read_text())
    written["args"]["encoder_dim"] = written["args"].pop("encoder_d_model")
    (tmp_path / "config.json").write_text(json.dumps(written))
    assert read_run_config(tmp_path / "config.json")["args"]["encoder_d_model"] == 32
