"""--sharding fsdp (FSDP2) under torchrun, two processes on gloo: it trains as DDP does, its
checkpoints are full and the same files, a stopped FSDP run resumes identically, and a run
resumes under the other sharding either way."""
import copy
import json
import shutil

import pytest
import torch

from sonar_t5.common.checkpoint_io import load_checkpoint
from sonar_t5.training.sharding import load_optimizer_state

from .conftest import run_script, train_argv
from .test_reliability_families import (STOPPABLE, log_lines, same_run, stopped_by_the_group,
                                         torchrun)
from .test_sonar_asl_encoder import ssvp_weights


@pytest.fixture(scope="module")
def ssvp_checkpoint(tmp_path_factory):
    """A tiny SONAR ASL encoder (2 + 2 T5 blocks): FSDP units of its own."""
    path = tmp_path_factory.mktemp("ssvp") / "sonar_encoder.pth"
    torch.save({"student": ssvp_weights()}, path)
    return path


def history(out):
    return json.loads((out / "training_history.json").read_text())


def close_runs(a, b, rel=1e-5):
    """Two runs whose reductions differ in order (all-reduce vs reduce-scatter): the same
    losses to float rounding, step by step."""
    for key in ("step", "train_loss", "val_loss"):
        assert [r[key] for r in history(a)] == pytest.approx([r[key] for r in history(b)],
                                                              rel=rel), key


def torchrun_job(data, out, *extra, check=True):
    return run_script(*torchrun("train_sonar_with_t5.py", *train_argv(data, out, *extra)),
                      check=check)


def stopped_mid_epoch(data, out, *flags):
    """A torchrun job stopped by SIGTERM to every process (as scancel does) during epoch 1."""
    command = torchrun("train_sonar_with_t5.py", *train_argv(data, out, *flags))
    _, stdout, stderr = stopped_by_the_group(command, out, every_process=True)
    assert "terminated (SIGTERM) in epoch 1 after" in stdout, stderr[-3000:]


@pytest.mark.slow
def test_fsdp_trains_as_ddp_and_runs_resume_under_either_sharding(tiny_data, ssvp_checkpoint,
                                                                  tmp_path):
    flags = (*STOPPABLE, "--num_workers", 0, "--sonar_checkpoint", ssvp_checkpoint,
             "--resampler_input", "tokens", "--skip_final_scoring")
    fsdp = tmp_path / "fsdp"
    result = torchrun_job(tiny_data, fsdp, *flags, "--sharding", "fsdp")
    assert "2 processes, FSDP" in result.stdout
    assert "Traceback" not in result.stderr and "view tensor" not in result.stderr

    # a DDP run stopped mid-epoch: its steps so far are FSDP's; resumed under FSDP, its
    # epochs are too
    ddp_to_fsdp = tmp_path / "ddp_to_fsdp"
    stopped_mid_epoch(tiny_data, ddp_to_fsdp, *flags)
    ddp_steps = log_lines(ddp_to_fsdp)
    assert ddp_steps and [r["loss"] for r in ddp_steps] == pytest.approx(
        [r["loss"] for r in log_lines(fsdp)[:len(ddp_steps)]], rel=1e-5)
    torchrun_job(tiny_data, ddp_to_fsdp, *flags, "--sharding", "fsdp", "--resume")
    close_runs(ddp_to_fsdp, fsdp)

    # an FSDP run stopped mid-epoch: resumed under FSDP, identical to the run not stopped;
    # under DDP, the same to rounding
    stopped = tmp_path / "fsdp_stopped"
    stopped_mid_epoch(tiny_data, stopped, *flags, "--sharding", "fsdp")
    shutil.copytree(stopped, tmp_path / "fsdp_to_ddp")
    torchrun_job(tiny_data, stopped, *flags, "--sharding", "fsdp", "--resume")
    same_run(stopped, fsdp)
    torchrun_job(tiny_data, tmp_path / "fsdp_to_ddp", *flags, "--resume")
    close_runs(tmp_path / "fsdp_to_ddp", fsdp)

    # FSDP's checkpoints hold full tensors, gathered: the keys, shapes and values DDP writes
    a, b = (load_checkpoint(out / "last_model.pt") for out in (fsdp, tmp_path / "fsdp_to_ddp"))
    assert {k: v.shape for k, v in a["state_dict"].items()} == \
        {k: v.shape for k, v in b["state_dict"].items()}
    for key, value in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][key], value, rtol=1e-4, atol=1e-5)
    # the optimizer's state by parameter name, the same for every parameter that is used
    # (--resampler_input tokens leaves the encoder's pooling part unused: DDP and FSDP give
    # some of those zero gradients, and so AdamW state, each its own)
    unused = ("encoder.decoder.", "encoder.projection_out.", "encoder.shared.")
    used = [{k for k in ckpt["optimizer"]["state"] if not k.startswith(unused)} for ckpt in (a, b)]
    assert used[0] == used[1] and len(used[0]) > 50
    assert set(a["optimizer"]["state"]) | set(b["optimizer"]["state"]) <= set(a["state_dict"])
    lrs = {g["name"]: g["initial_lr"] for g in a["optimizer"]["param_groups"]}  # per part
    assert lrs["encoder"] == pytest.approx(0.2 * lrs["t5"]) and lrs["bridge"] == lrs["t5"]
    # the validation script reads the checkpoint FSDP wrote as any other
    run_script("validate_perceiver_model.py", "--checkpoint", fsdp / "best_model.pt",
               "--features", tiny_data / "features" / "val", "--manifest",
               tiny_data / "manifests" / "val.tsv", "--output", tmp_path / "validated",
               "--num_beams", "1", check=True)
    assert json.loads((tmp_path / "validated" / "validation_summary.json").read_text())[
        "num_samples"] == 24


@pytest.mark.slow
def test_fsdp_with_a_frozen_encoder_checkpointing_and_bf16(tiny_data, ssvp_checkpoint, tmp_path):
    """The frozen encoder stays whole on every process (and unchanged); bf16
    gathers weights in bf16 and reduces gradients in fp32; gradient checkpointing recomputes
    inside the units: the losses are DDP's with the same flags, to bf16's rounding."""
    flags = ("--epochs", "2", "--sonar_checkpoint", ssvp_checkpoint, "--freeze_encoder",
             "--encoder_cache_dir", tmp_path / "cache", "--gradient_checkpointing",
             "--precision", "bf16", "--skip_final_scoring")
    torchrun_job(tiny_data, tmp_path / "ddp", *flags)
    torchrun_job(tiny_data, tmp_path / "fsdp", *flags, "--sharding", "fsdp")
    close_runs(tmp_path / "fsdp", tmp_path / "ddp", rel=2e-2)
    state = load_checkpoint(tmp_path / "fsdp" / "last_model.pt")["state_dict"]
    original = ssvp_weights()
    torch.testing.assert_close(state["encoder.projection_out.weight"],
                               original["projection_out.weight"], rtol=0, atol=0)


def test_optimizer_state_by_position_loads_by_name(tiny_model):
    """Checkpoints from before --sharding keyed AdamW's state by position: they load into
    the named form every checkpoint has now, into the parameters they belong to."""
    model = copy.deepcopy(tiny_model[0])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": params[:3]}, {"params": params[3:]}], lr=1e-3)
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()
    by_position = optimizer.state_dict()
    optimizer.zero_grad(set_to_none=True)  # as at a resume: no gradients yet
    fresh = torch.optim.AdamW([{"params": params[:3]}, {"params": params[3:]}], lr=1e-3)
    load_optimizer_state(model, fresh, by_position)
    for p in params:
        torch.testing.assert_close(fresh.state[p]["exp_avg"], optimizer.state[p]["exp_avg"])
    assert fresh.state[params[5]]["step"] == 1
    assert [g["lr"] for g in fresh.param_groups] == [1e-3, 1e-3]


def test_validation_leaves_the_units_as_training_set_them(tiny_model, tmp_path):
    """After whole_weights (each epoch's validation), a forward keeps the root's parameters
    gathered for the backward, as FSDP2 does for the root before it: setting every unit to
    reshard after its forward had the root gathered again in every later backward (epoch 2
    on), where the processes of a run that hung were found in different collectives."""
    import torch.distributed as torch_dist
    from torch.distributed.tensor import DTensor

    from sonar_t5.training.sharding import shard, whole_weights

    torch_dist.init_process_group("gloo", store=torch_dist.FileStore(str(tmp_path / "store"), 1),
                                  rank=0, world_size=1)
    try:
        model = shard(copy.deepcopy(tiny_model[0]).train(), "fp32")
        inputs, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
        labels = torch.tensor([[5, 6, 1], [7, 1, -100]])

        def root_after_forward():
            loss = model(inputs=inputs, input_mask=mask, labels=labels)
            kept = not isinstance(next(model.bridge.parameters()), DTensor)
            loss.backward()
            return kept

        assert root_after_forward()
        with whole_weights(model):
            model.prefix(inputs, mask)
        assert root_after_forward()
        block = model.t5.decoder.block[0].layer[0].SelfAttention.q.weight
        assert isinstance(block, DTensor)  # a block still reshards after its forward
    finally:
        torch_dist.destroy_process_group()
