"""Everything built before the first step: demo data, data sets and loaders, a new model,
feature statistics, the model wrapped for training, and config.json."""
import platform
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from sonar_t5.common.errors import UserError
from sonar_t5.common.progress import progress
from sonar_t5.data.dataset import Collator, FeatureDataset, make_loader
from sonar_t5.data.loader import SignalSafeDataLoader
from sonar_t5.data.synthetic import make_demo_data
from sonar_t5.models.build import build_encoder, build_model, load_t5_and_tokenizer
from sonar_t5.models.t5_decoder import is_preset

from .args import DEMO_DATA_DIR
from .defaults import choose_vocab_size
from .distributed import broadcast
from .sharding import shard


def make_demo_data_once(args, dist):
    """--demo: rank 0 writes the demo data unless it is there; the others wait for it."""
    data_dir = Path(args.output_dir) / DEMO_DATA_DIR
    if dist.is_main and not Path(args.train_manifest).is_file():
        print(f"making demo data in {data_dir}")
        make_demo_data(data_dir, seed=0)
    broadcast(None, dist)


def open_datasets(args, expected_dim=None):
    kwargs = dict(max_frames=args.max_frames, skip_missing=args.skip_missing)
    train = FeatureDataset(args.train_manifest, args.train_features, expected_dim=expected_dim,
                           **kwargs)
    val = FeatureDataset(args.val_manifest, args.val_features, expected_dim=train.feature_dim,
                         **kwargs)
    if args.test_manifest:  # scored only when training ends: its mistakes are found now
        FeatureDataset(args.test_manifest, args.test_features, expected_dim=train.feature_dim,
                       **kwargs).check_widths()
    return train, val


@torch.no_grad()
def feature_statistics(dataset, num_workers):
    """Per-dimension mean and std over every frame of the training set (float64 sums)."""
    loader = SignalSafeDataLoader(dataset, batch_size=None, num_workers=num_workers)
    total = torch.zeros(dataset.feature_dim, dtype=torch.float64)
    squares, frames = torch.zeros_like(total), 0
    for item in progress(loader, desc="feature statistics", leave=False):
        x = item["inputs"].double()
        total += x.sum(0)
        squares += (x * x).sum(0)
        frames += x.shape[0]
    mean = total / frames
    std = (squares / frames - mean * mean).clamp(min=0).sqrt().clamp(min=1e-5)
    return mean.float(), std.float()


CONTRASTIVE_DIM = 128  # --contrastive_weight's heads project prefix and text to this width


def build_new_model(args, train_set, dist):
    """A fresh SonarT5 + tokenizer. The tokenizer is trained on rank 0 and broadcast."""
    scratch = is_preset(args.t5_model)  # then a vocabulary is trained on the training text
    user_set = args.vocab_size is not None
    asked = choose_vocab_size(args, train_set.texts) if scratch else None
    t5, tokenizer = load_t5_and_tokenizer(args.t5_model, train_set.texts, args.vocab_size)
    if scratch and tokenizer.vocab_size < asked:  # SentencePiece stopped at the text's limit
        if user_set:
            raise UserError(f"--vocab_size {asked} is more than the training texts support: "
                            f"at most {tokenizer.vocab_size} pieces", args.train_manifest,
                            f"use --vocab_size {tokenizer.vocab_size} or less, or leave it "
                            "unset (chosen from the text)")
        args.vocab_size = args.defaults["chosen"]["vocab_size"] = tokenizer.vocab_size
    tokenizer = broadcast(tokenizer, dist)
    encoder = build_encoder(args.sonar_checkpoint, train_set.feature_dim,
                            d_model=args.encoder_d_model, num_layers=args.encoder_layers,
                            identity=args.identity_encoder)
    model = build_model(t5=t5, tokenizer=tokenizer, encoder=encoder, t5_model=args.t5_model,
                        bridge=args.bridge, resampler_input=args.resampler_input,
                        num_latents=args.num_latents, num_layers=args.num_layers,
                        hidden_dim=args.hidden_dim, num_heads=args.num_heads,
                        max_frames=args.max_frames, normalize_features=args.normalize_features,
                        contrastive_dim=CONTRASTIVE_DIM if args.contrastive_weight else 0)
    if args.normalize_features:
        mean, std = broadcast(feature_statistics(train_set, args.num_workers), dist)
        model.feature_mean.copy_(mean)
        model.feature_std.copy_(std)
    return model, tokenizer


def make_loaders(args, train_set, val_set, tokenizer, dist, device):
    collate = Collator(tokenizer, args.max_target_length)
    common = dict(num_workers=args.num_workers, num_replicas=dist.world_size,
                  rank=dist.rank, pin_memory=device.type == "cuda")
    train = make_loader(train_set, collate, args.batch_size, shuffle=True, seed=args.seed,
                        **common)
    val = make_loader(val_set, collate, args.eval_batch_size or args.batch_size,
                      shuffle=False, **common)
    return train, val


def wrap_for_training(model, args, runtime):
    """The module the training step calls: gradient checkpointing with
    --gradient_checkpointing; under torchrun DDP, or FSDP2 with --sharding fsdp (in place:
    `model` holds shards from then on); torch.compile with --compile. Generation and
    checkpoints use `model`."""
    dist, device = runtime.dist, runtime.device
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    wrapped = model
    if dist.enabled and args.sharding == "fsdp":
        wrapped = shard(model, runtime.precision)
    elif dist.enabled:
        # With --resampler_input tokens the encoder's pooling part feeds nothing (the feature
        # encoder's attention pooling; the SONAR ASL encoder's one-step decoder and
        # projection_out), so its parameters get no gradient. DDP waits for every parameter's
        # gradient unless told to look for unused ones, which costs a graph traversal per
        # step: hence only here. (FSDP reduces the gradients there are.)
        # gradient_as_bucket_view: the gradients live in DDP's all-reduce buckets instead of
        # beside them (one copy of the gradients less: 3 GB for the SONAR ASL encoder).
        unused = args.resampler_input == "tokens" and not args.freeze_encoder
        wrapped = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=unused, gradient_as_bucket_view=True)
    if args.compile:
        # Batch and label lengths vary: after the first recompile dynamo marks them dynamic
        # instead of compiling every new shape.
        wrapped = torch.compile(wrapped)
    return wrapped


def run_config(args, model, settings, train_set, val_set, runtime, encoder_cache=None):
    """What config.json holds: every argument, the resolved model config, parameter counts,
    the data, the frozen-encoder caches read (key, path, reused, seconds), the environment."""
    return {
        "args": vars(args), "model_config": model.config_dict(),
        "parameters": model.parameter_counts(), "generation": vars(settings),
        "data": {"train_samples": len(train_set), "val_samples": len(val_set),
                 "feature_dim": train_set.feature_dim},
        "encoder_cache": encoder_cache or {},
        "environment": {"device": str(runtime.device), "precision": runtime.precision,
                        "processes": runtime.dist.world_size, "torch": torch.__version__,
                        "python": platform.python_version()}}
