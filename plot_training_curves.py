#!/usr/bin/env python
"""Plot a run's loss, BLEU and conditioning-gap curves; compare runs; make a results table.

    python plot_training_curves.py --checkpoint_dir runs/x            # runs/x/training_curves.png
    python plot_training_curves.py --compare runs/a runs/b --output compare.png
    python plot_training_curves.py --table runs/a runs/b --output results   # .md and .tex
    python plot_training_curves.py --by_length runs/a runs/b --output by_length.png
"""
import argparse
from pathlib import Path

from sonar_t5.common.errors import UserError, cli_main, quiet_ctrl_c_until_main

if __name__ == "__main__":  # the imports take seconds: Ctrl-C then exits without a traceback
    quiet_ctrl_c_until_main()

from sonar_t5.common.files import atomic_write
from sonar_t5.evaluation.metrics import metric_names
from sonar_t5.evaluation.report import (bleu_by_length, check_figure_path, check_parent_dir,
                                        format_summary, history_groups, load_history,
                                        plot_bleu_by_length, plot_comparison, plot_run, summarize,
                                        system_name)
from sonar_t5.evaluation.table import column_names, results_table, to_latex, to_markdown
from sonar_t5.evaluation.significance import read_outputs


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
    what.add_argument("--by_length", nargs="+", metavar="PATH",
                      help="BLEU by reference length (buckets of words) of one or more scored "
                           "runs: run directories (their end-of-training scores, --split), "
                           "validation output directories or translations.txt files")
    p.add_argument("--columns", nargs="+", metavar="NAME",
                   help="--table's metric columns (default: BLEU, raw BLEU-4, chrF, ROUGE-L, "
                        "unique, cond_gap): 'all', or names from: " + ", ".join(
                            [*metric_names(), "cond_gap"]))
    p.add_argument("--bold_best", action="store_true",
                   help="--table: the best mean of each metric column in bold")
    p.add_argument("--split", default="test",
                   help="--by_length: which end-of-training scores of a run directory "
                        "(RUN/results/SPLIT)")
    p.add_argument("--output", help="the figure's path, its extension its format (default: "
                                    "CHECKPOINT_DIR/training_curves.FORMAT, or "
                                    "training_curves_comparison.FORMAT, or "
                                    "bleu_by_length.FORMAT); for --table the path stem of the "
                                    ".md and .tex files (default: results)")
    p.add_argument("--format", default="png", choices=("png", "pdf", "svg"),
                   help="the figure's format where --output is not given (pdf and svg: "
                        "vector, for a thesis)")
    p.add_argument("--title", help="a heading above the figure (none by default: a thesis "
                                   "gives its figures captions)")
    args = p.parse_args(argv)
    for flag in ("columns", "bold_best"):
        if getattr(args, flag) and not args.table:
            raise UserError(f"--{flag} only applies with --table", "command line")
    if args.table and (args.title or args.format != "png"):
        raise UserError("--title and --format apply to figures, not --table", "command line")
    if args.table:
        column_names(args.columns)  # an unknown name: before any run is read
        check_parent_dir(args.output or "results", "--output")
    elif args.output or args.compare or args.by_length or Path(args.checkpoint_dir).is_dir():
        # before any history is read (a read-only run directory needs --output elsewhere)
        check_figure_path(args.output or default_figure(args), "--output")
    return args


def default_figure(args):
    name = ("training_curves_comparison" if args.compare else
            "bleu_by_length" if args.by_length else "training_curves")
    folder = Path(args.checkpoint_dir) if args.checkpoint_dir else Path()
    return folder / f"{name}.{args.format}"


def write_text(path, text):
    atomic_write(path, lambda f: f.write(text), binary=False)


@cli_main
def main(argv=None):
    args = parse_args(argv)
    if args.table:
        table = results_table(args.table, args.columns)
        stem = Path(args.output or "results")
        markdown = to_markdown(table, bold_best=args.bold_best)
        latex = to_latex(table, bold_best=args.bold_best)
        write_text(stem.with_suffix(".md"), markdown + "\n")
        write_text(stem.with_suffix(".tex"), latex)
        print(markdown)
        print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.tex')}")
        return
    if args.by_length:
        systems = {str(path): bleu_by_length(*read_outputs(path, args.split)[1:])
                   for path in args.by_length}
        names = [system_name(path) for path in systems]  # the legend's: runs by their names
        shown = dict(zip(names if len(set(names)) == len(names) else systems, systems.values()))
        output = Path(args.output or default_figure(args))
        plot_bleu_by_length(shown, output, args.title)
        for name, rows in systems.items():
            print(f"{name}: " + "  ".join(f"{b} ({n}) {v:.2f}" for b, n, v, _ in rows))
    elif args.compare:
        if len({Path(d).name for d in args.compare}) < len(args.compare):
            raise UserError("two runs share a directory name", " ".join(args.compare),
                            "their curves would carry the same label; rename one")
        output = Path(args.output or default_figure(args))
        plot_comparison(history_groups(args.compare), output, args.title)
        for d in args.compare:
            print(format_summary(Path(d).name, summarize(load_history(d))))
    else:
        run = Path(args.checkpoint_dir)
        history = load_history(run)
        output = Path(args.output or default_figure(args))
        plot_run(history, output, args.title)
        print(format_summary(run.name, summarize(history)))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
