#!/usr/bin/env python
"""Validate a trained checkpoint: BLEU, chrF, mode-collapse check, lengths, samples, JSON.

    python validate_perceiver_model.py --checkpoint runs/x/best_model.pt \\
        --features FEATURES_DIR --manifest MANIFEST.tsv --output runs/x/validation_results
"""
import argparse
from pathlib import Path

from sonar_t5.common.cpu import wait_politely_if_shared
from sonar_t5.common.errors import quiet_ctrl_c_until_main

if __name__ == "__main__":  # the imports take seconds: Ctrl-C then exits without a traceback
    quiet_ctrl_c_until_main()
wait_politely_if_shared()  # before torch loads: OpenMP reads its wait policy once

import torch

from sonar_t5.common.cli import HelpFormatter, check_flag_ranges
from sonar_t5.common.errors import UserError, cli_main
from sonar_t5.common.files import check_output_dir_usable
from sonar_t5.common.precision import PRECISIONS
from sonar_t5.evaluation.attention import check_attention_plot, write_attention_plots
from sonar_t5.data.encoder_cache import CACHE_DIR_ENV, default_cache_dir
from sonar_t5.evaluation.generation import GenerationSettings, add_generation_args
from sonar_t5.evaluation.translate import load_translator
from sonar_t5.evaluation.validate import (format_report, validate_checkpoint, validation_dataset,
                                          write_results)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="best_model.pt or last_model.pt, or a folder exported from one "
                        "(python -m sonar_t5.evaluation.export)")
    p.add_argument("--features", required=True, help="directory of feature files")
    p.add_argument("--manifest", required=True, help="TSV manifest with references")
    p.add_argument("--output", default="validation_results",
                   help="directory for validation_summary.json and translations.txt")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--num_threads", type=int, default=0,
                   help="CPU threads for PyTorch (0 = one per core)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first N manifest rows")
    p.add_argument("--num_samples", type=int, default=10, help="sample translations to show")
    p.add_argument("--max_frames", type=int, default=None,
                   help="uniformly subsample longer sequences to this many frames (default: "
                        "the checkpoint's training setting; 0 = off)")
    p.add_argument("--use_encoder_cache", action="store_true",
                   help="read the encoder's states from the frozen-encoder cache (built here "
                        "unless a run with the same encoder, data, --max_frames and "
                        "--precision built it): for validating many checkpoints of one "
                        "frozen encoder")
    p.add_argument("--encoder_cache_dir", default=None,
                   help=f"with --use_encoder_cache (default: ${CACHE_DIR_ENV}, else "
                        "~/.cache/sonar_t5/encoder_states)")
    p.add_argument("--attention_plot", type=int, default=0, metavar="N",
                   help="for the first N samples, plot each Perceiver latent's attention over "
                        "the input frames (OUTPUT/attention/ID.png and .npy; needs a model "
                        "trained with --resampler_input tokens)")
    add_generation_args(p, default_note="the checkpoint's training settings, with 4 beams "
                                        "where training validated greedily")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    check_flag_ranges(args)
    if args.encoder_cache_dir and not args.use_encoder_cache:
        raise UserError("--encoder_cache_dir only applies with --use_encoder_cache",
                        "command line", "add --use_encoder_cache")
    args.encoder_cache_dir = str(args.encoder_cache_dir or default_cache_dir())
    check_output_dir_usable(args.output, "--output")  # before translating anything
    return args


@cli_main
def main(argv=None):
    args = parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    translator = load_translator(args.checkpoint, args.device, args.precision,
                                 **GenerationSettings.given_in(args))
    if args.attention_plot:  # before translating
        check_attention_plot(translator.model, args.checkpoint, args.output)
    dataset = validation_dataset(translator, args.manifest, args.features,
                                 max_frames=args.max_frames, limit=args.limit)
    summary, ids, refs, hyps = validate_checkpoint(
        translator, dataset, batch_size=args.batch_size, num_workers=args.num_workers,
        encoder_cache_dir=args.use_encoder_cache and args.encoder_cache_dir,
        checkpoint=args.checkpoint)
    print(format_report(summary, refs, hyps, args.num_samples))
    summary_path, translations_path = write_results(args.output, summary, ids, refs, hyps)
    print(f"wrote {summary_path} and {translations_path}")
    print(f"next: python -m sonar_t5.evaluation.analysis {args.output} --output "
          f"{Path(args.output) / 'analysis.html'}   # what it gets wrong, one page")
    if args.attention_plot:
        plots = write_attention_plots(translator.model, dataset, hyps, args.output,
                                      args.attention_plot, translator.device,
                                      translator.precision)
        print(f"wrote {len(plots)} attention plots in {plots[0].parent}")


if __name__ == "__main__":
    main()
