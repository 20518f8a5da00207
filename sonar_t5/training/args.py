"""train_sonar_with_t5.py's flags: the parser (grouped as --help shows them), the --demo
defaults, and the checks that run before any work."""
import argparse
import os
from pathlib import Path

from sonar_t5.common.cli import HelpFormatter, check_flag_ranges
from sonar_t5.common.config_file import read_config_file
from sonar_t5.common.errors import UserError
from sonar_t5.common.precision import PRECISIONS
from sonar_t5.data.synthetic import demo_paths
from sonar_t5.data.encoder_cache import CACHE_DIR_ENV, default_cache_dir
from sonar_t5.evaluation.generation import GenerationSettings, add_generation_args
from sonar_t5.models import BRIDGES, RESAMPLER_INPUTS, T5_PRESETS

from .defaults import fill_defaults
from .tracking import TRACKERS, check_trackers

DESCRIPTION = ("Train SONAR encoder -> Perceiver Resampler -> T5 decoder on feature files + "
               "TSV manifests.")
DEMO_DATA_DIR = "demo_data"  # --demo writes its data here, under --output_dir

# --demo: small enough to learn on 2 CPU cores in a few minutes.
DEMO_DEFAULTS = dict(
    output_dir="runs/demo", t5_model="t5-tiny", encoder_d_model=128,
    encoder_layers=2, resampler_input="tokens", hidden_dim=256, num_latents=32, num_heads=4,
    epochs=12, batch_size=32, learning_rate=1e-3, warmup_steps=100, label_smoothing=0.0,
    **GenerationSettings.QUICK, num_workers=0, device="auto")

DATA_FLAGS = ("train_features", "train_manifest", "val_features", "val_manifest")


def check_args(args, processes=None):
    """Every flag's range (one table, sonar_t5/common/cli.py), then the combinations that make no
    sense; nothing has been read or written yet."""
    check_flag_ranges(args)
    if args.demo:  # the demo data under the output directory, unless paths were given
        paths = demo_paths(Path(args.output_dir) / DEMO_DATA_DIR)
        for split in ("train", "val", "test"):
            features, manifest = f"{split}_features", f"{split}_manifest"
            if not getattr(args, features, None):
                setattr(args, features, str(paths[split][0]))
                setattr(args, manifest, str(paths[split][1]))
    if bool(args.test_features) != bool(args.test_manifest):
        raise UserError("--test_features and --test_manifest go together", "command line",
                        "give both (the test split scored when training ends), or neither")
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
    check_trackers(args.report_to)
    set_accumulation(args, processes or int(os.environ.get("WORLD_SIZE", "1")))  # torchrun's
    if args.resampler_input is None:
        args.resampler_input = BRIDGES[args.bridge].default_input
    if args.no_encoder_cache and not args.freeze_encoder:
        raise UserError("--no_encoder_cache only applies with --freeze_encoder", "command line")
    args.encoder_cache_dir = str(args.encoder_cache_dir or default_cache_dir())
    if args.identity_encoder and args.sonar_checkpoint:
        raise UserError("--identity_encoder and --sonar_checkpoint contradict each other",
                        "command line", "pick one")
    if not (args.sonar_checkpoint or args.identity_encoder) and args.encoder_d_model % 8:
        raise UserError(f"--encoder_d_model {args.encoder_d_model} is not a multiple of 8, the feature "
                        "encoder's attention heads", "command line", "use e.g. 128, 256 or 512")


def set_accumulation(args, processes):
    """--global_batch_size: the accumulation steps that make it from --batch_size per process
    and this many processes; refused where they do not divide it. Without it, the global
    batch follows from --grad_accum_steps."""
    per_step = args.batch_size * processes
    if args.global_batch_size is None:
        return
    if args.grad_accum_steps != 1:
        raise UserError("--global_batch_size and --grad_accum_steps both set the accumulation",
                        "command line", "give one of them")
    if args.global_batch_size % per_step:
        raise UserError(f"--global_batch_size {args.global_batch_size} is not a multiple of "
                        f"--batch_size {args.batch_size} x {processes} "
                        f"process{'es' * (processes > 1)} = {per_step}", "command line",
                        "choose a --batch_size per process (or a number of processes) whose "
                        "product divides it")
    args.grad_accum_steps = args.global_batch_size // per_step


def batch_shape(batch_size, processes, accumulation_steps):
    """{global, per_process, processes, accumulation_steps}: what one optimizer step sees
    (config.json's "batch", the start line)."""
    return {"global": batch_size * processes * accumulation_steps, "per_process": batch_size,
            "processes": processes, "accumulation_steps": accumulation_steps}


def batch_text(shape):
    """batch_shape() in words: "batch 64 = 16 per process x 2 processes x 2 accumulation
    steps"."""
    processes, steps = shape["processes"], shape["accumulation_steps"]
    return (f"batch {shape['global']} = {shape['per_process']} per process x {processes} "
            f"process{'es' * (processes > 1)} x {steps} accumulation step{'s' * (steps > 1)}")


def build_parser():
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("--config", metavar="FILE.yaml",
                   help="read flags from a YAML file (keys are flag names: learning_rate: "
                        "1e-4); flags on the command line win; configs/ has examples")
    data = p.add_argument_group("data")
    data.add_argument("--train_features", help="directory of training feature files")
    data.add_argument("--train_manifest", help="training TSV manifest")
    data.add_argument("--val_features", help="directory of validation feature files")
    data.add_argument("--val_manifest", help="validation TSV manifest")
    data.add_argument("--test_features", help="directory of test feature files: with "
                      "--test_manifest, the best checkpoint is scored on the test split "
                      "when training ends (OUTPUT/results/test/)")
    data.add_argument("--test_manifest", help="test TSV manifest")
    data.add_argument("--max_frames", type=int, default=0,
                      help="uniformly subsample longer sequences to this many frames (0 = off)")
    data.add_argument("--normalize_features", action="store_true",
                      help="standardise each feature dimension with training-set statistics "
                           "(stored in the checkpoint)")
    data.add_argument("--skip_missing", action="store_true",
                      help="drop manifest rows whose feature file is missing (with a warning) "
                           "instead of stopping")
    data.add_argument("--max_target_length", type=int, default=128,
                      help="truncate reference texts to this many tokens")
    data.add_argument("--num_workers", type=int, default=2, help="DataLoader worker processes")
    data.add_argument("--demo", action="store_true",
                      help="make the built-in demo data under --output_dir and train on it with "
                           "CPU-friendly defaults (explicit flags still win)")

    model = p.add_argument_group("model")
    model.add_argument("--sonar_checkpoint",
                       help="fine-tuned SONAR encoder: ssvp_slt's SONAR ASL encoder checkpoint "
                            "(or a fine-tune of it; any T5 size), or a feature encoder saved "
                            "by this toolkit. Without it a feature encoder is trained from "
                            "scratch")
    model.add_argument("--identity_encoder", action="store_true",
                       help="features already are 1024-d SONAR embeddings: no encoder")
    model.add_argument("--encoder_d_model", "--encoder_dim", type=int, default=None,
                       help="width (d_model) of the feature encoder trained from scratch "
                            "(used without --sonar_checkpoint; default: 512, or the decoder's "
                            "width when it is trained from scratch; --encoder_dim: its former "
                            "name)")
    model.add_argument("--encoder_layers", type=int, default=None,
                       help="layers of the feature encoder trained from scratch (used without "
                            "--sonar_checkpoint; default: 4, or 1 beside a decoder trained "
                            "from scratch)")
    model.add_argument("--t5_model", default="t5-small",
                       help="hub name, local save_pretrained directory, or a from-scratch "
                            f"preset: {', '.join(T5_PRESETS)}")
    model.add_argument("--vocab_size", type=int, default=None,
                       help="SentencePiece vocabulary trained for a from-scratch T5 preset "
                            "(default: one piece per 45 words of training text, 200-8000, "
                            "at most what the text supports)")
    model.add_argument("--bridge", default="perceiver", choices=BRIDGES,
                       help="the bridge from the encoder to T5's prefix: the Perceiver "
                            "Resampler, or the original guide's projection baseline (the kinds "
                            "registered in sonar_t5/models/bridges.py)")
    model.add_argument("--resampler_input", default=None, choices=RESAMPLER_INPUTS,
                       help="bridge reads the encoder's token states or its pooled SONAR "
                            "embedding (default: the bridge's own, " + ", ".join(
                                f"{b.default_input} for {name}" for name, b in BRIDGES.items())
                            + ")")
    model.add_argument("--num_latents", type=int, default=None,
                       help="prefix tokens for T5 (default: 64; from scratch: the decoder's "
                            "width / 16, at least 16)")
    model.add_argument("--num_layers", type=int, default=2, help="Perceiver layers")
    model.add_argument("--hidden_dim", type=int, default=None,
                       help="bridge width (default: 768; from scratch: the decoder's width)")
    model.add_argument("--num_heads", type=int, default=None,
                       help="bridge attention heads (default: 8; from scratch: the width / "
                            "64, at least 4)")
    model.add_argument("--freeze_encoder", action="store_true",
                       help="keep the SONAR encoder fixed (needs --sonar_checkpoint); its "
                            "outputs are computed once, kept in --encoder_cache_dir and "
                            "reused by every run with the same encoder and data")
    model.add_argument("--encoder_cache_dir", default=None,
                       help="where frozen-encoder caches live, shared by runs (default: "
                            f"${CACHE_DIR_ENV}, else ~/.cache/sonar_t5/encoder_states); see "
                            "and clear them with python -m sonar_t5.data.encoder_cache list|clear")
    model.add_argument("--no_encoder_cache", action="store_true",
                       help="with --freeze_encoder, re-run the encoder every epoch (slower; "
                            "for comparison)")
    model.add_argument("--gradient_checkpointing", action="store_true",
                       help="recompute the T5 blocks' activations (SONAR ASL encoder and T5 "
                            "decoder) in the backward pass: less memory for unfrozen "
                            "training of a large encoder, about a third more time")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=30)
    opt.add_argument("--batch_size", type=int, default=None,
                     help="per process (default: 16; 32 for a decoder trained from scratch)")
    opt.add_argument("--global_batch_size", type=int, default=None,
                     help="the effective batch the recipe means, whatever the number of "
                          "processes: gradient accumulation = this / (--batch_size x "
                          "processes), which must divide it (replaces --grad_accum_steps)")
    opt.add_argument("--time_budget", type=float, default=0, metavar="MINUTES",
                     help="train for about this long (data and model setup not counted): "
                          "the first epoch is timed, the epochs that fit are run (at most "
                          "--epochs) and the learning rate decays to 0 over them (0 = off)")
    opt.add_argument("--learning_rate", type=float, default=None,
                     help="peak learning rate (default: 1e-4 for a pretrained decoder, 1e-3 "
                          "for one trained from scratch)")
    opt.add_argument("--encoder_lr_scale", type=float, default=0.2,
                     help="encoder LR = learning_rate x this (0.2 = LR/5, the original guide's rate)")
    opt.add_argument("--warmup_steps", type=int, default=None,
                     help="linear warm-up (default: 500 steps for a pretrained decoder; from "
                          "scratch: the first epoch, at most 5%% of the planned steps)")
    opt.add_argument("--weight_decay", type=float, default=0.01)
    opt.add_argument("--label_smoothing", type=float, default=0.1)
    opt.add_argument("--word_dropout", type=float, default=0.0,
                     help="replace decoder input tokens by <unk> with this probability "
                          "(a lever against mode collapse; 0 = off)")
    opt.add_argument("--contrastive_weight", type=float, default=0.0,
                     help="add this x a contrastive loss that asks each prefix to pick out its "
                          "own sentence among the batch's (a lever against mode collapse; "
                          "the training loss includes it; 0 = off)")
    opt.add_argument("--grad_accum_steps", type=int, default=1,
                     help="optimizer step every this many batches (per process)")
    opt.add_argument("--max_grad_norm", type=float, default=1.0)
    opt.add_argument("--fused_adamw", action="store_true", help="fused AdamW kernel (CUDA)")
    opt.add_argument("--compile", action="store_true",
                     help="torch.compile the training forward pass (a one-off compile of a "
                          "minute or more; measured no gain on CPU: docs/performance.md)")
    opt.add_argument("--seed", type=int, default=42)

    evaluation = p.add_argument_group("evaluation")
    evaluation.add_argument("--eval_batch_size", type=int, default=None,
                            help="validation batch size (default: --batch_size)")
    evaluation.add_argument("--patience", type=int, default=0,
                            help="stop after this many epochs without a BLEU gain (0 = off)")
    evaluation.add_argument("--skip_final_scoring", action="store_true",
                            help="do not score the best checkpoint when training ends (by "
                                 "default: on the validation and test splits with the "
                                 "validation script's settings, into OUTPUT/results/)")
    add_generation_args(p)

    run = p.add_argument_group("run")
    run.add_argument("--output_dir", default=None,
                     help="where the run's files go (default: runs/demo with --demo)")
    run.add_argument("--device", default="auto", help="cuda, cpu or auto")
    run.add_argument("--num_threads", type=int, default=0,
                     help="CPU threads for PyTorch (0 = one per core); on a shared machine, "
                          "OpenMP threads wait passively when other jobs run at start")
    run.add_argument("--precision", default="auto", choices=PRECISIONS,
                     help="auto: bf16 on GPUs that have it, fp16 (guarded) on others, fp32 on CPU")
    run.add_argument("--sharding", default="ddp", choices=("ddp", "fsdp"),
                     help="under torchrun: ddp (every process holds the whole model and its "
                          "optimizer state) or fsdp (FSDP2: weights, gradients and AdamW's "
                          "state sharded over the processes, one unit per T5 block; for an "
                          "unfrozen SONAR ASL encoder on small GPUs). Checkpoints are the same "
                          "either way, and a run resumes under the other")
    run.add_argument("--log_every", type=int, default=50,
                     help="write a line to OUTPUT/train_log.jsonl every this many optimizer "
                          "steps: loss, learning rates, gradient norm, samples/s")
    run.add_argument("--report_to", nargs="+", default=["none"], choices=TRACKERS,
                     help="also send the step log, each epoch's validation metrics and sample "
                          "translations, and the config to these trackers (TensorBoard: "
                          "OUTPUT/tensorboard; wandb and trackio when installed)")
    run.add_argument("--resume", action="store_true", help="continue from OUTPUT/last_model.pt")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run already in --output_dir")
    return p


def parse_args(argv=None, config_values=None, processes=None):
    """Flags: the command line, over --config's file (or config_values, flags already read
    and checked: a sweep's run), over the --demo defaults, over the decoder's defaults
    (sonar_t5/training/defaults.py: pretrained or from scratch), over the parser's own
    defaults. processes: how many will train (default: torchrun's WORLD_SIZE, else 1)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from_file = config_values if config_values is not None else (
        read_config_file(args.config, parser) if args.config else {})
    if args.demo or from_file.get("demo"):
        parser.set_defaults(**DEMO_DEFAULTS)
    parser.set_defaults(**from_file)
    args = parser.parse_args(argv)
    fill_defaults(args)
    check_args(args, processes)
    return args
