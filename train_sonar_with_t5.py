#!/usr/bin/env python
"""Train SONAR encoder -> Perceiver Resampler -> T5 decoder on feature files + TSV manifests.

    python train_sonar_with_t5.py --demo                       # built-in demo data, CPU ok
    python train_sonar_with_t5.py --sonar_checkpoint enc.pt --train_features ... \\
        --train_manifest ... --val_features ... --val_manifest ... --output_dir runs/x

main() below is the whole run, top to bottom. Each step is one call into a package:
flags (sonar_t5/training/args.py), the output directory and its lock (sonar_t5/training/output_dir.py), data
and model (sonar_t5/training/setup.py), the frozen-encoder cache on disk (sonar_t5/data/encoder_cache/),
one epoch of training or evaluation (sonar_t5/training/engine.py), checkpoints and resume
(sonar_t5/training/state.py).
"""
import sys
import time
import traceback
from pathlib import Path

from sonar_t5.common.cpu import wait_politely_if_shared
from sonar_t5.common.errors import quiet_ctrl_c_until_main

if __name__ == "__main__":  # the imports take seconds: Ctrl-C then exits without a traceback
    quiet_ctrl_c_until_main()
wait_politely_if_shared()  # before torch loads: OpenMP reads its wait policy once

import torch

from sonar_t5.common.errors import cli_main
from sonar_t5.common.precision import guard_t5_fp16
from sonar_t5.common.progress import progress
from sonar_t5.data.encoder_cache import cached_loaders
from sonar_t5.evaluation.generation import GenerationSettings
from sonar_t5.evaluation.validate import RESULTS_DIR, score_best_checkpoint
from sonar_t5.models.checkpoint import load_model
from sonar_t5.training.args import DEMO_DATA_DIR, batch_text, parse_args
from sonar_t5.training.defaults import choose_warmup_steps, defaults_line
from sonar_t5.training.distributed import all_reduce_sum, barrier, gather_lists, open_runtime
from sonar_t5.training.engine import (StepSettings, epoch_record, evaluate, report_epoch,
                                      train_one_epoch)
from sonar_t5.training.mfu import FlopsMeter, peak_flops
from sonar_t5.training.optim import OptimizerSettings, build_optimization, plan_time_budget
from sonar_t5.training.output_dir import OutputDir, OutputSettings
from sonar_t5.training.setup import (DataSettings, LoaderSettings, ModelSettings, WrapSettings,
                                     build_new_model, make_demo_data_once, make_loaders,
                                     new_decoder, open_datasets, run_config, wrap_for_training)
from sonar_t5.training.state import (TrainState, check_resume, exit_during_scoring,
                                     exit_interrupted, ignore_further_stops, restore_progress,
                                     save_progress)
from sonar_t5.training.tracking import Tracker, TrackerSettings


@cli_main
def main(argv=None):
    args = parse_args(argv)  # every flag checked here, before any work
    with open_runtime(args.device, args.precision, args.num_threads,
                      flags=vars(args)) as runtime, \
            OutputDir(OutputSettings.from_args(args), runtime.dist.is_main) as out_dir:
        dist, device, say = runtime.dist, runtime.device, runtime.say
        if args.demo:
            make_demo_data_once(Path(args.output_dir) / DEMO_DATA_DIR, dist)
        torch.manual_seed(args.seed)

        # Data and model: new, or (--resume) the model of last_model.pt.
        data = DataSettings.from_args(args)
        if out_dir.resume_from:
            model, tokenizer, ckpt = load_model(out_dir.resume_from)
            resume_note = check_resume(args, ckpt, out_dir.resume_from)
            train_set, val_set = open_datasets(data, model.encoder.config.input_dim)
        else:
            ckpt = resume_note = None
            train_set, val_set = open_datasets(data)
            t5, tokenizer = new_decoder(args, train_set, dist)  # resolves --vocab_size
            model = build_new_model(ModelSettings.from_args(args), t5, tokenizer, train_set,
                                    dist)
        out_dir.set_aside_old_run()  # --overwrite: data and model check out

        model.to(device).train()
        if runtime.precision == "fp16":
            guard_t5_fp16(model.t5)
        train_loader, val_loader = make_loaders(LoaderSettings.from_args(args), train_set,
                                                val_set, tokenizer, dist, device)
        encoder_cache = {}  # which caches the run read: config.json says
        if args.freeze_encoder:
            model.freeze_encoder()
            if not args.no_encoder_cache:  # a frozen encoder is a fixed function: run it once
                (train_loader, val_loader), encoder_cache = cached_loaders(
                    model, {"train": train_loader, "val": val_loader}, args.encoder_cache_dir,
                    device, runtime.precision, show=dist.is_main, used_by=args.output_dir)
        # DDP or FSDP, torch.compile
        train_model = wrap_for_training(model, WrapSettings.from_args(args), runtime)
        steps_per_epoch = -(-len(train_loader) // args.grad_accum_steps)
        choose_warmup_steps(args, steps_per_epoch)  # unset, from scratch: from the epoch's steps
        optimizing = OptimizerSettings.from_args(args)  # after the warm-up's default is set
        optimization = build_optimization(model, optimizing, steps_per_epoch, runtime,
                                          planned=ckpt and ckpt["state"].get("decay_from"))
        state, history = TrainState(), []
        if ckpt is not None:
            state, history = restore_progress(ckpt, model, optimization, dist.rank)
        steps = StepSettings.from_args(args)  # what a training step reads from the flags
        # MFU: the peak now (measured on CPU), the FLOPs per sample at the first step
        meter = FlopsMeter(*peak_flops(device, runtime.precision), world_size=dist.world_size)
        settings = GenerationSettings.from_args(args)  # per-epoch validation's generate()
        config = run_config(args, model, settings, train_set, val_set, runtime,
                            encoder_cache)
        say(f"{'resuming' if ckpt else 'training'} on {device} ({runtime.precision}, "
            f"{dist.world_size} process{'es' * (dist.world_size > 1)}"
            f"{', ' + args.sharding.upper() if dist.enabled else ''}): "
            f"{len(train_set)} train / {len(val_set)} val samples, {batch_text(config['batch'])}; "
            "parameters: "
            + ", ".join(f"{k} {v:,}" for k, v in config["parameters"].items()))
        say(f"MFU against a peak of {meter.peak_flops / 1e9:,.0f} GFLOP/s ({meter.peak_source}, "
            f"{runtime.precision}, {torch.get_num_threads()} threads)")
        say(defaults_line(args.defaults))
        unsharded = args.sharding == "fsdp" and not dist.enabled and FSDP_ONE_PROCESS_NOTE
        for note in filter(None, [resume_note, args.compile and COMPILE_NOTE, unsharded]):
            say(note)
        # train_log.jsonl and --report_to; a --resume continues them after its checkpoint
        tracker = Tracker(TrackerSettings.from_args(args), config,
                          resume_step=state.global_step if ckpt else None,
                          enabled=dist.is_main)

        epoch, stopped = state.epoch + 1, None
        runtime.agree_on_stops()  # under torchrun all processes stop at one step together
        try:
            last = min(args.epochs, state.planned_epochs or args.epochs)  # --time_budget's plan
            for epoch in progress(range(state.epoch + 1, last + 1), desc="epochs",
                                  initial=state.epoch, total=last, disable=not dist.is_main):
                start = time.time()
                train_loss, samples_per_s = train_one_epoch(
                    epoch, train_model, train_loader, optimization, state, steps, runtime,
                    meter, log_step=tracker.log_step)
                metrics = evaluate(model, val_loader, tokenizer, settings, runtime)
                # The processes' mean: under torchrun every one plans --time_budget alike.
                seconds = all_reduce_sum([time.time() - start], dist, device)[0] / dist.world_size
                record = epoch_record(epoch, train_loss, samples_per_s, metrics, state,
                                      optimization, seconds, meter.mfu(samples_per_s))
                history.append(record)
                tracker.log_epoch(record)
                improved = state.end_epoch(epoch, record["val_bleu"], record["epoch_time_s"])
                if args.time_budget and state.planned_epochs is None:
                    say(plan_time_budget(optimizing, state, optimization, steps_per_epoch))
                save_progress(args.output_dir, model, tokenizer, state, history, optimization,
                              improved, config, writes=dist.is_main)  # FSDP: gathered from all
                if dist.is_main:
                    out_dir.checkpoint_written()  # --overwrite: the earlier run goes now
                    report_epoch(record, metrics["diversity"]["collapsed"], history,
                                 args.epochs, args.resampler_input, say)
                runtime.stop_if_any_asked()  # a stop noted during validation, under torchrun
                if args.patience and state.bad_epochs >= args.patience:
                    say(f"early stopping: no BLEU gain for {args.patience} epochs")
                    break
                if state.planned_epochs and epoch >= state.planned_epochs:
                    say(f"time budget: {state.seconds / 60:.1f} of {args.time_budget:g} min "
                        f"used in {epoch} epochs")
                    break
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM, anywhere in the loop
            ignore_further_stops()
            # every process's share of the epoch's loss (under torchrun they stop together)
            state.partial_loss_by_rank = gather_lists(state.partial_loss, dist)
            if out_dir.replacing:  # nothing of the new run is worth the earlier run: put it back
                traceback.clear_frames(stop.__traceback__)  # they hold the DDP wrapper
                raise
            # save where training stands, mid-epoch too
            save_progress(args.output_dir, model, tokenizer, state, history, optimization,
                          False, config, writes=dist.is_main)
            barrier(dist)  # the others exit once it is saved (torchrun ends them then)
            stopped = stop.with_traceback(None)  # its frames hold the DDP wrapper
        except BaseException as error:
            traceback.clear_frames(error.__traceback__)  # they hold the DDP wrapper
            raise
        finally:
            tracker.close()
            # DDP holds the process group: free it before open_runtime destroys the group, or
            # a gloo thread and this one can wait for each other at exit (torchrun then kills
            # the process 30 s later).
            del train_model
        if stopped:
            exit_interrupted(args.output_dir, epoch, state, stopped, show=dist.is_main)
        if dist.is_main:
            try:
                runtime.stop_at_once()  # the others are done: a stop need not wait for them
                scored = None if args.skip_final_scoring else score_best_checkpoint(
                    args.output_dir, final_splits(args), device=device, precision="fp32",
                    batch_size=args.eval_batch_size or args.batch_size,
                    num_workers=args.num_workers, skip_missing=args.skip_missing, say=say)
            except KeyboardInterrupt as stop:
                exit_during_scoring(stop)
            print_next_steps(args, state, history, scored)


FSDP_ONE_PROCESS_NOTE = ("--sharding fsdp: one process holds the whole model (nothing to shard "
                         "it over); start with torchrun to shard it")
COMPILE_NOTE = ("--compile: the first batches of each new shape compile (a minute or more) "
                "before training runs at full speed")


def final_splits(args):
    """What the best checkpoint is scored on when training ends: {split: (features,
    manifest)}, the test split where one was given (--demo has one)."""
    splits = {"val": (args.val_features, args.val_manifest)}
    if args.test_manifest:
        splits["test"] = (args.test_features, args.test_manifest)
    return splits


def print_next_steps(args, state, history, scored):
    out = Path(args.output_dir)
    print(f"\nbest validation BLEU {state.best_bleu:.2f} at epoch {state.best_epoch} "
          f"({len(history)} epochs); outputs in {out}/: config.json, training_history.json, "
          "best_model.pt, last_model.pt, train_log.jsonl")
    if scored:
        print(f"best_model.pt scored on {' and '.join(scored)}: {out / RESULTS_DIR}/SPLIT/ "
              "holds validation_summary.json (metrics, 95% intervals, signatures) and "
              "translations.txt (id, reference, translation)")
    split = "test" if args.test_manifest else "val"
    features, manifest = ((args.test_features, args.test_manifest) if args.test_manifest
                          else (args.val_features, args.val_manifest))
    lines = [f"python plot_training_curves.py --checkpoint_dir {out}"]
    if scored:
        lines += [f"python plot_training_curves.py --table {out / RESULTS_DIR / split} "
                  f"--output {out / 'results_table'}",
                  f"python -m sonar_t5.evaluation.significance BASELINE_RUN {out} --split {split}"
                  "   # BASELINE_RUN: another run scored on the same split",
                  f"python -m sonar_t5.evaluation.analysis {out} --split {split} "
                  f"--train_manifest {args.train_manifest} --output {out / 'analysis.html'}"
                  "   # what it gets wrong, one page"]
    lines.append(f"python validate_perceiver_model.py --checkpoint {out / 'best_model.pt'} "
                 f"--features {features} --manifest {manifest} --output "
                 f"{out / 'validation_results'}   # other settings: --num_beams, ...")
    print("next:\n" + "\n".join("  " + line for line in lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
