"""What the model gets wrong: one self-contained HTML page of one system's outputs, or
several systems' side by side.

    python -m sonar_t5.evaluation.analysis RESULTS [RESULTS ...] --output report.html

Each RESULTS is a training run directory (its end-of-training scores, RUN/results/SPLIT/), a
validation output directory (validate_perceiver_model.py --output) or a translations.txt; runs
that differ only in --seed are one system (as the results table and the significance command
group them), the first system is the one the others are tested against. The page holds: each
system's scores with their 95% intervals and paired tests; BLEU and the length ratio by
reference length; word F-measure by the word's frequency in the training text
(--train_manifest); the hypotheses that share no content word with their reference; the
hypotheses written more than once; for two systems or more, the n-grams each gets right more
often and the sentences where they differ most; with --checkpoint, the Perceiver's attention
over the frames of the sentences --attention_ids names; and every sentence in a table that
sorts by any column and filters by text and by bucket. The file needs nothing beside it (no
server, no network): open it from a cluster's file system on a laptop.
"""
import argparse
import logging
import shlex
import sys
from pathlib import Path

from sonar_t5.common.cli import HelpFormatter
from sonar_t5.common.errors import UserError, cli_main
from sonar_t5.common.files import atomic_write
from sonar_t5.data.manifest import read_manifest

from ..report import check_parent_dir
from .breakdown import word_frequencies
from .page import analyse, render
from .systems import load_systems


def build_parser():
    p = argparse.ArgumentParser(prog="python -m sonar_t5.evaluation.analysis",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("systems", nargs="+", metavar="RESULTS",
                   help="runs, results or validation directories, or translations.txt files; "
                        "the first system is the baseline")
    p.add_argument("--output", required=True, help="the page to write (.html)")
    p.add_argument("--split", default="test",
                   help="for run directories: which end-of-training scores (RUN/results/SPLIT)")
    p.add_argument("--train_manifest", default=None,
                   help="the training manifest: word frequencies from its text (default: "
                        "counted in the references, which says less about rare words)")
    p.add_argument("--checkpoint", default=None,
                   help="a Perceiver checkpoint: its attention maps of --attention_ids")
    p.add_argument("--attention_ids", nargs="+", default=None, metavar="ID",
                   help="with --checkpoint: the sentences whose attention to show (default: "
                        "the first 3)")
    p.add_argument("--features", default=None,
                   help="with --checkpoint: the sentences' feature directory (default: the one "
                        "the first system's validation_summary.json names)")
    p.add_argument("--manifest", default=None,
                   help="with --checkpoint: their manifest (default: likewise)")
    p.add_argument("--n_samples", type=int, default=1000,
                   help="bootstrap and randomisation resamples of the paired tests")
    p.add_argument("--seeds_apart", action="store_true",
                   help="every run its own system, also runs that differ only in --seed")
    p.add_argument("--device", default="auto", help="with --checkpoint: where the model runs")
    return p


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.getLogger("sacrebleu").setLevel(logging.WARNING)  # its progress notes
    check_output(args.output)
    if args.n_samples < 10:
        raise UserError(f"--n_samples must be at least 10 (got {args.n_samples})",
                        "command line")
    if args.checkpoint is None and (args.attention_ids or args.features or args.manifest):
        raise UserError("--attention_ids, --features and --manifest are for attention maps",
                        "command line", "give --checkpoint too, or leave them out")
    ids, references, systems = load_systems(args.systems, args.split, not args.seeds_apart)
    frequencies = source = None
    if args.train_manifest:
        rows = read_manifest(args.train_manifest)
        frequencies = word_frequencies([r.text for r in rows])
        source = f"the training text ({args.train_manifest}, {len(rows)} sentences)"
    attention = []
    if args.checkpoint:
        from .attention_maps import attention_maps  # loads torch and the model: only here
        attention = attention_maps(args.checkpoint, ids, systems, picked=args.attention_ids,
                                   features=args.features, manifest=args.manifest,
                                   device=args.device)
    context = analyse(ids, references, systems, frequencies=frequencies,
                      frequency_source=source, n_samples=args.n_samples, split=args.split,
                      attention=attention, command=command_line(argv))
    page = render(context)
    atomic_write(args.output, lambda f: f.write(page), binary=False)
    print(f"wrote {args.output} ({len(page.encode()) / 1e6:.1f} MB): {len(systems)} "
          f"system{'s' if len(systems) > 1 else ''}, {len(ids)} sentences; open it in a browser")


def check_output(output):
    """Before any work: an .html path in a directory that can be written."""
    if Path(output).suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--output must end in .html (got '{Path(output).suffix}')", output,
                        "name the page report.html, for example")
    if Path(output).is_dir():
        raise UserError("--output is a directory", output, "give a file name ending in .html")
    check_parent_dir(output)


def command_line(argv):
    words = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "-m", "sonar_t5.evaluation.analysis", *words])


if __name__ == "__main__":
    sys.exit(main())
