"""Everything before the first step: output directory, data, tokenizer, model, statistics."""
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from common.errors import UserError
from data.dataset import Collator, FeatureDataset, make_loader
from models.build import build_encoder, build_model, load_t5_and_tokenizer
from models.checkpoint import load_model

RUN_FILES = ("config.json", "training_history.json", "best_model.pt", "last_model.pt",
             "training_curves.png")
DEMO_DATA_DIR = "demo_data"


def check_output_dir(args):
    """Refuse to mix runs: a directory holding anything needs --resume or --overwrite.
    -> (last_model.pt to resume from or None, names that --overwrite will remove)."""
    out = Path(args.output_dir)
    last = out / "last_model.pt"
    if args.resume:
        if not last.is_file():
            raise UserError("nothing to resume: no last_model.pt", str(out),
                            "drop --resume to start a new run")
        for stale in out.glob(".*.tmp"):  # half-written by a run killed mid-save
            stale.unlink(missing_ok=True)
        return last, []
    held = sorted(p.name for p in out.iterdir() if p.name != DEMO_DATA_DIR) if out.is_dir() else []
    if held and not args.overwrite:
        raise UserError(f"output directory is not empty (holds {', '.join(held[:4])})",
                        str(out), "pass --resume to continue that run, --overwrite to replace "
                                  "it, or choose another --output_dir")
    return None, held


REPLACED_DIR = ".replaced_run"  # --overwrite: the earlier run, until the new one has a checkpoint


def set_aside_old_run(output_dir, names):
    """--overwrite, once data and model are known good: the old run's files move into
    .replaced_run/. They go at the new run's first checkpoint (drop_old_run); an error met
    before that puts them back (restore_old_run), so a failed start never leaves neither run."""
    out = Path(output_dir)
    aside = out / REPLACED_DIR
    if aside.exists():  # a replacement that never reached a checkpoint: its files are partial
        for name in names:
            if name != REPLACED_DIR:
                _remove(out / name)
        return
    aside.mkdir()
    for name in names:
        (out / name).rename(aside / name)


@contextmanager
def replacing_old_run(output_dir, names, is_main):
    """Set the old run aside for the block; put it back if the block fails before the new
    run's first checkpoint (after that, restore_old_run finds nothing to do)."""
    if is_main:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    replacing = is_main and bool(names)  # not for a new directory, nor for --resume
    if replacing:
        set_aside_old_run(output_dir, names)
    try:
        yield
    except BaseException:  # errors, Ctrl-C before any checkpoint, exit(1) on divergence
        if replacing:
            restore_old_run(output_dir)
        raise


def drop_old_run(output_dir):
    shutil.rmtree(Path(output_dir) / REPLACED_DIR, ignore_errors=True)


def restore_old_run(output_dir):
    """The new run stopped before its first checkpoint: its files go, the earlier run's return."""
    out = Path(output_dir)
    aside = out / REPLACED_DIR
    if not aside.is_dir():
        return
    for path in out.iterdir():
        if path.name not in (REPLACED_DIR, DEMO_DATA_DIR):
            _remove(path)
    for path in aside.iterdir():
        path.rename(out / path.name)
    aside.rmdir()


def _remove(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def open_datasets(args, expected_dim=None):
    kwargs = dict(max_frames=args.max_frames, skip_missing=args.skip_missing)
    train = FeatureDataset(args.train_manifest, args.train_features, expected_dim=expected_dim,
                           **kwargs)
    val = FeatureDataset(args.val_manifest, args.val_features, expected_dim=train.feature_dim,
                         **kwargs)
    return train, val


@torch.no_grad()
def feature_statistics(dataset, num_workers):
    """Per-dimension mean and std over every frame of the training set (float64 sums)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers)
    total = torch.zeros(dataset.feature_dim, dtype=torch.float64)
    squares, frames = torch.zeros_like(total), 0
    for item in tqdm(loader, desc="feature statistics", leave=False):
        x = item["features"].double()
        total += x.sum(0)
        squares += (x * x).sum(0)
        frames += x.shape[0]
    mean = total / frames
    std = (squares / frames - mean * mean).clamp(min=0).sqrt().clamp(min=1e-5)
    return mean.float(), std.float()


def build_new_model(args, train_set, broadcast):
    """A fresh SonarT5 + tokenizer. The tokenizer is trained on rank 0 and broadcast."""
    t5, tokenizer = load_t5_and_tokenizer(args.t5_model, train_set.texts, args.vocab_size)
    tokenizer = broadcast(tokenizer)
    encoder = build_encoder(args.sonar_checkpoint, train_set.feature_dim,
                            d_model=args.encoder_dim, num_layers=args.encoder_layers,
                            identity=args.identity_encoder)
    model = build_model(t5=t5, tokenizer=tokenizer, encoder=encoder, t5_model=args.t5_model,
                        bridge=args.bridge, resampler_input=args.resampler_input,
                        num_latents=args.num_latents, num_layers=args.num_layers,
                        hidden_dim=args.hidden_dim, num_heads=args.num_heads,
                        max_frames=args.max_frames, normalize_features=args.normalize_features)
    if args.normalize_features:
        mean, std = broadcast(feature_statistics(train_set, args.num_workers))
        model.feature_mean.copy_(mean)
        model.feature_std.copy_(std)
    return model, tokenizer


def resume_model(last_path):
    model, tokenizer, ckpt = load_model(last_path)
    return model.train(), tokenizer, ckpt


def make_loaders(args, train_set, val_set, tokenizer, dist_info, device):
    collate = Collator(tokenizer, args.max_target_length)
    common = dict(num_workers=args.num_workers, num_replicas=dist_info.world_size,
                  rank=dist_info.rank, pin_memory=device.type == "cuda")
    train = make_loader(train_set, collate, args.batch_size, shuffle=True, seed=args.seed,
                        **common)
    val = make_loader(val_set, collate, args.eval_batch_size or args.batch_size,
                      shuffle=False, **common)
    return train, val, collate

