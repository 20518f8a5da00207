"""--sharding fsdp: PyTorch's FSDP2 (fully_shard) over the model, and the state dicts that make
a sharded run's checkpoints the same files as any other run's.

Under DDP every process holds the whole training state: weights, gradients and AdamW's two
moments, 16 bytes a parameter (12.2 GB for the 752M SONAR ASL encoder and the rest). FSDP
keeps 1/N of each on each of N processes and gathers a unit's weights only while it runs:
one unit per T5 block (the SONAR ASL encoder's two stacks, the T5 decoder), and the root
for what is left (embeddings, the bridge, the feature projection).

Checkpoints hold full tensors, gathered by torch.distributed.checkpoint's state dicts, and
the optimizer's state keyed by parameter name, whatever trained them: a DDP run resumes
under FSDP and back, and validation, export and the smoke test read them as they are.
"""
import warnings
from contextlib import contextmanager

import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor


def blocks_to_shard(model, shard_frozen_encoder):
    """The T5 blocks that are units of their own: the T5 decoder's, and the SONAR ASL
    encoder's unless it is frozen (and left whole)."""
    stacks = [model.t5.decoder]
    if model.encoder.config.kind == "sonar_asl" and (shard_frozen_encoder
                                                     or not model.encoder_frozen):
        stacks += [model.encoder.encoder, model.encoder.decoder]
    return [block for stack in stacks for block in stack.block]


def shard(model, precision, shard_frozen_encoder=False):
    """FSDP2 over `model` in place (its parameters become shards, DTensors). bf16: weights
    are gathered in bf16, gradients reduced in fp32 (fp16 keeps fp32 weights under
    autocast, for the T5 guard and the gradient scaler).
    A frozen encoder is left whole on every process (shard_frozen_encoder=True shards it, for
    benchmarks/sharded_memory.py --freeze_encoder, which measured both): it has no gradients
    or optimizer state, and every process loads the whole model before sharding it, so
    sharding its weights lowers what a process holds later but not its peak (3.85 vs 3.48
    GiB per process, 2 processes, 761M), and costs a gather of it at each step that runs it
    (20.8 vs 14.1 s a step with --no_encoder_cache)."""
    # T5Stack passes each block's outputs on without changing them in place, which is what
    # this warning (once per process) is about: FSDP trains as DDP does (tests/test_sharding.py).
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if precision == "bf16" else None,
        reduce_dtype=torch.float32)
    for block in blocks_to_shard(model, shard_frozen_encoder):
        fully_shard(block, mp_policy=policy)
    whole = (set(model.encoder.parameters())
             if model.encoder_frozen and not shard_frozen_encoder else None)
    fully_shard(model, mp_policy=policy, ignored_params=whole)
    return model


def is_sharded(model):
    return isinstance(model, FSDPModule)


@contextmanager
def whole_weights(model):
    """Validation calls the model's parts (prefix, decoder_loss, generate), not its forward,
    and each process generates a different number of tokens: every unit is gathered for the
    whole of it, so no unit gathers again (a collective the others would not join) until
    it ends. A plain or DDP model: nothing to do."""
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield model
    finally:
        for unit in units:
            unit.reshard()
            # training's settings again: a block reshards after its forward; the root keeps
            # its parameters, which the backward that follows at once needs (FSDP2's own
            # choice for the root; setting True there too made every epoch after the first
            # gather the root again in the backward)
            unit.set_reshard_after_forward(unit is not model, recurse=False)


@contextmanager
def accumulating(model):
    """Gradient accumulation's micro-batches before the last: gradients stay on each process
    (DDP's no_sync; FSDP: not reduce-scattered until the step's last micro-batch)."""
    if not is_sharded(model):
        with model.no_sync():
            yield
        return
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def full_value(tensor):
    """A DTensor's whole value (a sharded model's gradient norm, summed over the shards);
    any other tensor as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_training_state(model, optimizer, is_main):
    """-> (the model's state dict, the optimizer's keyed by parameter name): full tensors, on
    the CPU when sharded, on the process that writes (is_main); (None, None) on the others.
    Sharded, every process must call this (the shards are gathered)."""
    if not is_sharded(model) and not is_main:
        return None, None
    options = StateDictOptions(full_state_dict=True, cpu_offload=is_sharded(model))
    model_state = get_model_state_dict(model, options=options)
    if is_main:  # tied weights (T5's embedding and LM head) gathered once each: one tensor
        for names in _tied_names(model):
            for name in names[1:]:
                if names[0] in model_state and name in model_state:
                    model_state[name] = model_state[names[0]]
    return model_state, get_optimizer_state_dict(model, optimizer, options=options)


def _tied_names(model):
    """[[names of one parameter], ...] for each parameter that has several."""
    names = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return [n for n in names.values() if len(n) > 1]


def load_optimizer_state(model, optimizer, saved):
    """A checkpoint's optimizer state into `optimizer`, sharded or not. saved: keyed by
    parameter name (this toolkit's checkpoints), or by position (torch's optimizer.state_dict(),
    in checkpoints from before --sharding: the positions are the optimizer's parameters in
    order). Parameters that never had a gradient (unused by --resampler_input tokens) have no
    state: not an error."""
    if saved["state"] and not isinstance(next(iter(saved["state"])), str):
        saved = _by_name(model, optimizer, saved)
    set_optimizer_state_dict(model, optimizer, saved,
                             options=StateDictOptions(full_state_dict=True, strict=False))


def _by_name(model, optimizer, saved):
    name_of = {id(p): n for n, p in model.named_parameters()}
    names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    return {"state": {names[i]: s for i, s in saved["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]}
                             for g in saved["param_groups"]]}
