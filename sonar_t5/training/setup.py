"""Everything built before the first step: demo data, data sets and loaders, a new model,
feature statistics, the model wrapped for training, and config.json."""
import platform
from dataclasses import dataclass
from typing import Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from sonar_t5.common.errors import UserError
from sonar_t5.common.flag_views import FlagView
from sonar_t5.common.progress import progress
from sonar_t5.data.dataset import Collator, FeatureDataset, make_loader
from sonar_t5.data.loader import SignalSafeDataLoader
from sonar_t5.data.synthetic import demo_paths, make_demo_data
from sonar_t5.models.build import build_encoder, build_model, load_t5_and_tokenizer
from sonar_t5.models.t5_decoder import is_preset

from .args import batch_shape
from .defaults import choose_vocab_size
from .distributed import broadcast
from .sharding import shard


def make_demo_data_once(data_dir, dist):
    """--demo: rank 0 writes the demo data into data_dir unless it is there; the others wait
    for it."""
    _, train_manifest = demo_paths(data_dir)["train"]
    if dist.is_main and not train_manifest.is_file():
        print(f"making demo data in {data_dir}")
        make_demo_data(data_dir, seed=0)
    broadcast(None, dist)


@dataclass(frozen=True)
class DataSettings(FlagView):
    """The data flags: the splits, and how their feature files are read."""
    train_features: str
    train_manifest: str
    val_features: str
    val_manifest: str
    test_features: Optional[str]
    test_manifest: Optional[str]  # scored when training ends; checked at the start
    max_frames: int
    skip_missing: bool


def open_datasets(data, expected_dim=None):
    """data: DataSettings -> (train, val) FeatureDatasets; the test split's files are
    checked now, though it is read only when training ends."""
    kwargs = dict(max_frames=data.max_frames, skip_missing=data.skip_missing)
    train = FeatureDataset(data.train_manifest, data.train_features, expected_dim=expected_dim,
                           **kwargs)
    val = FeatureDataset(data.val_manifest, data.val_features, expected_dim=train.feature_dim,
                         **kwargs)
    if data.test_manifest:  # scored only when training ends: its mistakes are found now
        FeatureDataset(data.test_manifest, data.test_features, expected_dim=train.feature_dim,
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


def new_decoder(args, train_set, dist):
    """-> (T5, tokenizer) for a new run: t5-small etc. as saved, or a preset's fresh decoder
    with a SentencePiece vocabulary trained on the training text (on rank 0, broadcast). The
    last default is resolved here, from that text: --vocab_size, written back to the flags."""
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
    return t5, broadcast(tokenizer, dist)


@dataclass(frozen=True)
class ModelSettings(FlagView):
    """The flags that shape a new model around its decoder."""
    t5_model: str
    sonar_checkpoint: Optional[str]
    identity_encoder: bool
    encoder_d_model: int
    encoder_layers: int
    bridge: str
    resampler_input: str
    num_latents: int
    num_layers: int
    hidden_dim: int
    num_heads: int
    max_frames: int
    normalize_features: bool  # the training set's feature statistics, kept in the model
    contrastive_weight: float  # > 0: the model gets contrastive heads
    num_workers: int  # for the feature statistics' pass


def build_new_model(settings, t5, tokenizer, train_set, dist):
    """A fresh SonarT5 around new_decoder()'s T5 and tokenizer; settings: ModelSettings."""
    encoder = build_encoder(settings.sonar_checkpoint, train_set.feature_dim,
                            d_model=settings.encoder_d_model,
                            num_layers=settings.encoder_layers,
                            identity=settings.identity_encoder)
    model = build_model(t5=t5, tokenizer=tokenizer, encoder=encoder,
                        t5_model=settings.t5_model, bridge=settings.bridge,
                        resampler_input=settings.resampler_input,
                        num_latents=settings.num_latents, num_layers=settings.num_layers,
                        hidden_dim=settings.hidden_dim, num_heads=settings.num_heads,
                        max_frames=settings.max_frames,
                        normalize_features=settings.normalize_features,
                        contrastive_dim=CONTRASTIVE_DIM if settings.contrastive_weight else 0)
    if settings.normalize_features:
        mean, std = broadcast(feature_statistics(train_set, settings.num_workers), dist)
        model.feature_mean.copy_(mean)
        model.feature_std.copy_(std)
    return model


@dataclass(frozen=True)
class LoaderSettings(FlagView):
    """How the batches are made."""
    batch_size: int  # per process
    eval_batch_size: Optional[int]  # None: batch_size
    max_target_length: int
    num_workers: int
    seed: int  # the training order's


def make_loaders(loading, train_set, val_set, tokenizer, dist, device):
    """loading: LoaderSettings -> (train, val) loaders, each process's share under torchrun."""
    collate = Collator(tokenizer, loading.max_target_length)
    common = dict(num_workers=loading.num_workers, num_replicas=dist.world_size,
                  rank=dist.rank, pin_memory=device.type == "cuda")
    train = make_loader(train_set, collate, loading.batch_size, shuffle=True, seed=loading.seed,
                        **common)
    val = make_loader(val_set, collate, loading.eval_batch_size or loading.batch_size,
                      shuffle=False, **common)
    return train, val


@dataclass(frozen=True)
class WrapSettings(FlagView):
    """How the training step runs the model."""
    gradient_checkpointing: bool
    sharding: str  # ddp or fsdp, under torchrun
    resampler_input: str
    freeze_encoder: bool
    compile: bool


def wrap_for_training(model, wrapping, runtime):
    """The module the training step calls (wrapping: WrapSettings): gradient checkpointing
    with --gradient_checkpointing; under torchrun DDP, or FSDP2 with --sharding fsdp (in
    place: `model` holds shards from then on); torch.compile with --compile. Generation and
    checkpoints use `model`."""
    dist, device = runtime.dist, runtime.device
    if wrapping.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    wrapped = model
    if dist.enabled and wrapping.sharding == "fsdp":
        wrapped = shard(model, runtime.precision)
    elif dist.enabled:
        # With --resampler_input tokens the encoder's pooling part feeds nothing (the feature
        # encoder's attention pooling; the SONAR ASL encoder's one-step decoder and
        # projection_out), so its parameters get no gradient. DDP waits for every parameter's
        # gradient unless told to look for unused ones, which costs a graph traversal per
        # step: hence only here. (FSDP reduces the gradients there are.)
        # gradient_as_bucket_view: the gradients live in DDP's all-reduce buckets instead of
        # beside them (one copy of the gradients less: 3 GB for the SONAR ASL encoder).
        unused = wrapping.resampler_input == "tokens" and not wrapping.freeze_encoder
        wrapped = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=unused, gradient_as_bucket_view=True)
    if wrapping.compile:
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
        "batch": batch_shape(args.batch_size, runtime.dist.world_size, args.grad_accum_steps),
        "data": {"train_samples": len(train_set), "val_samples": len(val_set),
                 "feature_dim": train_set.feature_dim},
        "encoder_cache": encoder_cache or {},
        "environment": {"device": str(runtime.device), "precision": runtime.precision,
                        "processes": runtime.dist.world_size, "torch": torch.__version__,
                        "python": platform.python_version()}}
