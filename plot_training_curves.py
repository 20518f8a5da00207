#!/usr/bin/env python
"""Plot a run's loss, BLEU and conditioning-gap curves; compare runs; make a results table.

    python plot_training_curves.py --checkpoint_dir runs/x            # runs/x/training_curves.png
    python plot_training_curves.py --compare runs/a runs/b --output compare.png
    python plot_training_curves.py --table runs/a runs/b --output results   # .md and .tex
"""
import argparse
from pathlib import Path

from common.errors import UserError, cli_main
from common.files import atomic_write
from evaluation.report import (check_figure_path, check_parent_dir, format_summary,
                               history_groups, load_history, plot_comparison, plot_run,
                               results_table, summarize, to_latex, to_markdown)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint_dir", help="a run's --output_dir (training_history.json)")
    what.add_argument("--compare", nargs="+", metavar="DIR",
                      help="overlay several runs' BLEU and validation loss; runs that differ "
                           "only in --seed are drawn as their mean with a min-max band")
    what.add_argument("--table", nargs="+", metavar="PATH",
                      help="results table from run directories and/or validation summaries "
                           "(validation_summary.json or its directory); runs that differ only "
                           "in --seed make one row: mean ± std over the seeds, and n")
    p.add_argument("--output", help="PNG path (default: CHECKPOINT_DIR/training_curves.png, "
                                    "or training_curves_comparison.png); for --table the "
                                    "path stem of the .md and .tex files (default: results)")
    args = p.parse_args(argv)
    if args.table:
        check_parent_dir(args.output or "results", "--output")
    elif args.output or args.compare or Path(args.checkpoint_dir).is_dir():
        # before any history is read (a read-only run directory needs --output elsewhere)
        check_figure_path(args.output or default_figure(args), "--output")
    return args


def default_figure(args):
    if args.compare:
        return Path("training_curves_comparison.png")
    return Path(args.checkpoint_dir) / "training_curves.png"


def write_text(path, text):
    atomic_write(path, lambda f: f.write(text), binary=False)


@cli_main
def main(argv=None):
    args = parse_args(argv)
    if args.table:
        frame = results_table(args.table)
        stem = Path(args.output or "results")
        markdown, latex = to_markdown(frame), to_latex(frame)
        write_text(stem.with_suffix(".md"), markdown + "\n")
        write_text(stem.with_suffix(".tex"), latex)
        print(markdown)
        print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.tex')}")
        return
    if args.compare:
        if len({Path(d).name for d in args.compare}) < len(args.compare):
            raise UserError("two runs share a directory name", " ".join(args.compare),
                            "their curves would carry the same label; rename one")
        output = Path(args.output or default_figure(args))
        plot_comparison(history_groups(args.compare), output)
        for d in args.compare:
            print(format_summary(Path(d).name, summarize(load_history(d))))
    else:
        run = Path(args.checkpoint_dir)
        history = load_history(run)
        output = Path(args.output or default_figure(args))
        plot_run(history, output, run.name)
        print(format_summary(run.name, summarize(history)))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
