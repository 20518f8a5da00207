"""run_training(args): what train_sonar_with_t5.py does, start to finish."""
import platform
import sys
from pathlib import Path

import torch

from common.errors import UserError
from common.files import write_json
from data.synthetic import demo_paths, make_demo_data
from evaluation.generation import GenerationSettings

from .distributed import broadcast, cleanup, init_distributed
from .precision import resolve_precision
from .setup import (DEMO_DATA_DIR, build_new_model, check_output_dir, make_loaders,
                    open_datasets, replacing_old_run, resume_model)
from .trainer import Trainer

# --demo: small enough to learn on 2 CPU cores in a few minutes.
DEMO_DEFAULTS = dict(
    output_dir="runs/demo", t5_model="t5-tiny", vocab_size=1000, encoder_dim=128,
    encoder_layers=2, resampler_input="tokens", hidden_dim=256, num_latents=32, num_heads=4,
    epochs=12, batch_size=32, learning_rate=1e-3, warmup_steps=100, label_smoothing=0.0,
    num_beams=1, max_new_tokens=32, num_workers=0, device="auto")

DATA_FLAGS = ("train_features", "train_manifest", "val_features", "val_manifest")


def check_args(args):
    if args.demo:  # the demo data under the output directory, unless paths were given
        paths = demo_paths(Path(args.output_dir) / DEMO_DATA_DIR)
        for split in ("train", "val", "test"):
            features, manifest = f"{split}_features", f"{split}_manifest"
            if not getattr(args, features, None):
                setattr(args, features, str(paths[split][0]))
                setattr(args, manifest, str(paths[split][1]))
    missing = [f"--{f}" for f in DATA_FLAGS if not getattr(args, f)]
    if missing:
        raise UserError(f"missing {', '.join(missing)}", "command line",
                        "give the data paths, or use --demo")
    if not args.output_dir:
        raise UserError("missing --output_dir", "command line", "say where the run goes")
    if args.freeze_encoder and not args.sonar_checkpoint:
        raise UserError("--freeze_encoder without --sonar_checkpoint would freeze a random "
                        "encoder", "command line", "pass --sonar_checkpoint, or drop "
                        "--freeze_encoder")
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other", "command line",
                        "pick one")
    if args.no_encoder_cache and not args.freeze_encoder:
        raise UserError("--no_encoder_cache only applies with --freeze_encoder", "command line")
    if args.identity_encoder and args.sonar_checkpoint:
        raise UserError("--identity_encoder and --sonar_checkpoint contradict each other",
                        "command line", "pick one")
    for name in ("epochs", "batch_size", "grad_accum_steps"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1", "command line")
    if not 0 <= args.word_dropout < 1 or not 0 <= args.label_smoothing < 1:
        raise UserError("--word_dropout and --label_smoothing must be in [0, 1)", "command line")


def run_training(args):
    check_args(args)
    dist_info, device = init_distributed(args.device)
    try:
        _run(args, dist_info, device)
    finally:
        cleanup(dist_info)


def _run(args, dist_info, device):
    precision = resolve_precision(args.precision, device)
    last, old_files = check_output_dir(args)
    if args.demo and dist_info.is_main and not Path(args.train_manifest).is_file():
        print(f"making demo data in {Path(args.output_dir) / DEMO_DATA_DIR}")
        make_demo_data(Path(args.output_dir) / DEMO_DATA_DIR, seed=0)
    broadcast(None, dist_info)  # wait for rank 0's files
    torch.manual_seed(args.seed)
    ckpt = None
    if last:
        model, tokenizer, ckpt = resume_model(last)
        train_set, val_set = open_datasets(args, model.encoder.config.input_dim)
    else:
        train_set, val_set = open_datasets(args)
        model, tokenizer = build_new_model(args, train_set, lambda x: broadcast(x, dist_info))
    with replacing_old_run(args.output_dir, old_files, dist_info.is_main):
        _train(args, dist_info, device, precision, model, tokenizer, train_set, val_set, ckpt)


def _train(args, dist_info, device, precision, model, tokenizer, train_set, val_set, ckpt):
    """Loaders, Trainer, config.json, the epochs; ckpt: the checkpoint resumed from, or None."""
    loaders = make_loaders(args, train_set, val_set, tokenizer, dist_info, device)
    settings = GenerationSettings.from_args(args)
    trainer = Trainer(args, model, tokenizer, loaders, device, dist_info, precision, settings)
    if ckpt is not None:
        trainer.restore(ckpt)
    say = print if dist_info.is_main else (lambda *a, **k: None)
    counts = model.parameter_counts()
    if dist_info.is_main:
        write_json(Path(args.output_dir) / "config.json", {
            "args": vars(args), "model_config": model.config_dict(),
            "parameters": counts, "generation": vars(settings),
            "data": {"train_samples": len(train_set), "val_samples": len(val_set),
                     "feature_dim": train_set.feature_dim},
            "environment": {"device": str(device), "precision": precision,
                            "processes": dist_info.world_size, "torch": torch.__version__,
                            "python": platform.python_version()}})
    say(f"{'resuming' if ckpt is not None else 'training'} on {device} ({precision}, "
        f"{dist_info.world_size} process{'es' * (dist_info.world_size > 1)}): "
        f"{len(train_set)} train / {len(val_set)} val samples, parameters: "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if args.compile:
        say("--compile: the first batches of each new shape compile (a minute or more) "
            "before training runs at full speed")
    history = trainer.fit()
    if dist_info.is_main:
        _print_next_steps(args, trainer, history)


def _print_next_steps(args, trainer, history):
    out = Path(args.output_dir)
    best = trainer.state
    print(f"\nbest validation BLEU {best['best_bleu']:.2f} at epoch {best['best_epoch']} "
          f"({len(history)} epochs); outputs in {out}/: config.json, training_history.json, "
          "best_model.pt, last_model.pt")
    test = getattr(args, "test_manifest", None)  # the demo's held-out split
    features, manifest = ((args.test_features, test) if test and Path(test).is_file()
                          else (args.val_features, args.val_manifest))
    print("next:\n"
          f"  python validate_perceiver_model.py --checkpoint {out / 'best_model.pt'} "
          f"--features {features} --manifest {manifest} --output {out / 'validation_results'}\n"
          f"  python plot_training_curves.py --checkpoint_dir {out}")
    sys.stdout.flush()


