"""Is one system better than another on the same sentences? sacrebleu's paired tests.

    python -m evaluation.significance BASELINE OTHER [OTHER ...]

Each argument is a validation output directory (validate_perceiver_model.py --output: its
translations.txt), a training run directory holding one (RUN/validation_results/), or a
translations.txt itself. Every system must have scored the same sentences, in the same order,
with the same references. For BLEU and chrF it prints each system's score with its 95%
confidence interval (paired bootstrap resampling of sentences) and the p-values of its
difference from the baseline under paired bootstrap resampling and approximate randomisation
(sacrebleu's own implementations of both, 1000 resamples by default).

Reading a p-value: it is the chance of a difference at least this large if the two systems
were equally good on this data; p < 0.05 is the usual bar. It says nothing about another
seed: a difference between two runs can be significant on the test sentences and still
smaller than the spread between seeds of one configuration, so compare seed groups' means
and standard deviations (plot_training_curves.py --table) as well.
"""
import argparse
import logging
import sys
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest

from common.errors import UserError, cli_main

METRICS = {"BLEU": BLEU, "chrF": CHRF}  # sacrebleu's defaults: the headline convention


def read_outputs(path):
    """-> (ids, references, hypotheses) of a translations.txt (tab-separated id, reference,
    translation, after a header line), found from a file, a results or a run directory."""
    path = Path(path)
    for candidate in (path, path / "translations.txt",
                      path / "validation_results" / "translations.txt"):
        if candidate.is_file():
            break
    else:
        raise UserError("no translations.txt", str(path), "pass a directory written by "
                        "validate_perceiver_model.py --output, or a run directory holding one")
    rows = candidate.read_text(encoding="utf-8").splitlines()[1:]
    fields = [row.split("\t") for row in rows]
    bad = next((n for n, f in enumerate(fields, 2) if len(f) != 3), None)
    if bad is not None:
        raise UserError("not a translations file (id, reference, translation)",
                        f"{candidate}:{bad}", "pass a file written by validate_perceiver_model.py")
    return [f[0] for f in fields], [f[1] for f in fields], [f[2] for f in fields]


def check_same_sentences(systems):
    """Every system scored the baseline's sentences: same count, ids and references."""
    (base_name, (base_ids, base_refs, _)), *others = systems
    for name, (ids, refs, _) in others:
        if len(ids) != len(base_ids):
            raise UserError(f"{name} scored {len(ids)} sentences, {base_name} {len(base_ids)}",
                            name, "compare systems scored on the same split")
        for n, (a, b, ra, rb) in enumerate(zip(base_ids, ids, base_refs, refs), 1):
            if a != b or ra != rb:
                raise UserError(f"{name} and {base_name} differ at sentence {n} ('{b}' vs "
                                f"'{a}')", name, "compare systems scored on the same split, in "
                                                 "the same order")


def paired_tests(named_hypotheses, references, n_samples=1000):
    """named_hypotheses: [(name, hypotheses)], the baseline first, all of the same sentences.
    -> {metric: [{system, score, mean, ci, p_bootstrap, p_randomisation}, ...]}: ci is the
    half-width of the 95% interval around the bootstrap mean; the baseline has no p-values."""
    metrics = {label: make() for label, make in METRICS.items()}
    # sacrebleu gives intervals for the systems compared with the baseline: the baseline is
    # compared with itself once, for its own
    systems = [("baseline", named_hypotheses[0][1]), *named_hypotheses]
    rows = {label: [] for label in METRICS}
    bootstrap = PairedTest(systems, metrics, [references], "bs", n_samples)()[1]
    randomised = PairedTest(systems, metrics, [references], "ar", n_samples)()[1]
    for label, bs, ar in zip(METRICS, list(bootstrap.values())[1:],
                             list(randomised.values())[1:]):
        for i, (name, hypotheses) in enumerate(named_hypotheses):
            first, same = i == 0, hypotheses == named_hypotheses[0][1]
            # identical outputs: nothing differs, so p = 1 (sacrebleu, following multeval,
            # reports 1/(n+1) there, so that a zero difference is never put down to chance)
            rows[label].append({
                "system": name, "score": bs[i + 1].score, "mean": bs[i + 1].mean,
                "ci": bs[i + 1].ci,
                "p_bootstrap": None if first else 1.0 if same else bs[i + 1].p_value,
                "p_randomisation": None if first else 1.0 if same else ar[i + 1].p_value})
    return rows


def confidence_intervals(hypotheses, references, n_samples=1000):
    """{metric name: [low, high]}: the 95% bootstrap interval of BLEU and chrF."""
    rows = paired_tests([("system", hypotheses)], references, n_samples)
    return {label.lower(): [float(r["mean"] - r["ci"]), float(r["mean"] + r["ci"])]
            for label, (r,) in rows.items()}


def format_rows(rows, n_samples):
    lines = []
    for label, systems in rows.items():
        lines.append(f"{label} (95% interval from {n_samples} bootstrap resamples; p: paired "
                     "bootstrap / approximate randomisation, vs the first system)")
        for r in systems:
            p = ("baseline" if r["p_bootstrap"] is None else
                 f"p = {r['p_bootstrap']:.4f} / {r['p_randomisation']:.4f}")
            lines.append(f"  {r['system']:<30} {r['score']:6.2f}  ({r['mean']:.2f} ± "
                         f"{r['ci']:.2f})  {p}")
    return "\n".join(lines)


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m evaluation.significance",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("systems", nargs="+", metavar="PATH",
                   help="the baseline, then the systems to compare with it")
    p.add_argument("--n_samples", type=int, default=1000, help="resamples of each test")
    args = p.parse_args(argv)
    logging.getLogger("sacrebleu").setLevel(logging.WARNING)  # its progress notes
    if len(args.systems) < 2:
        raise UserError("give a baseline and at least one system to compare", "command line")
    if args.n_samples < 10:
        raise UserError(f"--n_samples must be at least 10 (got {args.n_samples})",
                        "command line")
    systems = [(str(path), read_outputs(path)) for path in args.systems]
    check_same_sentences(systems)
    references = systems[0][1][1]
    rows = paired_tests([(name, outputs[2]) for name, outputs in systems], references,
                        args.n_samples)
    print(format_rows(rows, args.n_samples))


if __name__ == "__main__":
    sys.exit(main())
