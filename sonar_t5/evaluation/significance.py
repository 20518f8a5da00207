"""Is one system better than another on the same sentences? sacrebleu's paired tests.

    python -m sonar_t5.evaluation.significance BASELINE OTHER [OTHER ...]

Each argument is a training run directory (its end-of-training scores, RUN/results/SPLIT/,
--split test by default; else RUN/validation_results/), a validation output directory
(validate_perceiver_model.py --output), or a translations.txt itself. Every system must have
scored the same sentences, in the same order, with the same references. For BLEU and chrF it
prints each system's score with its 95% confidence interval (paired bootstrap resampling of
sentences) and the p-values of its difference from the baseline under paired bootstrap
resampling and approximate randomisation (sacrebleu's own implementations of both, 1000
resamples by default).

Seed groups. Runs that differ only in --seed (as plot_training_curves.py --table groups them)
are compared as one system: its score is the mean over the seeds (± their standard
deviation), and the tests run on the seeds' outputs pooled, seed i of one group beside seed i
of the other, so the p-value is about the mean over the seeds on these sentences. Groups
compared must have the same number of seeds.

Reading a p-value: it is the chance of a difference at least this large if the two systems
were equally good on this data; p < 0.05 is the usual bar. It says nothing about another
seed: a difference between two runs can be significant on the test sentences and still
smaller than the spread between seeds of one configuration, so compare seed groups' means
and standard deviations (plot_training_curves.py --table) as well.
"""
import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest

from sonar_t5.common.errors import UserError, cli_main
from sonar_t5.common.schemas import read_run_config, read_summary

from .experiments import experiment_key, seed_groups

METRICS = {"BLEU": BLEU, "chrF": CHRF}  # sacrebleu's defaults: the headline convention


def find_outputs(path, split="test"):
    """A translations.txt, a directory holding one, or a run directory: its
    results/SPLIT/translations.txt (the end-of-training scores), else
    validation_results/translations.txt."""
    path = Path(path)
    for candidate in (path, path / "translations.txt",
                      path / "results" / split / "translations.txt",
                      path / "validation_results" / "translations.txt"):
        if candidate.is_file():
            return candidate
    raise UserError(f"no translations.txt (nor results/{split}/ of a run)", str(path),
                    "pass a run directory scored when training ended, or a directory "
                    "written by validate_perceiver_model.py --output")


def read_outputs(path, split="test"):
    """-> (ids, references, hypotheses) of a translations.txt (tab-separated id, reference,
    translation, after a header line), found from a file, a results or a run directory."""
    candidate = find_outputs(path, split)
    try:
        text = candidate.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"not UTF-8 text ({error.reason} at byte {error.start})",
                        str(candidate), "pass a file written by validate_perceiver_model.py")
    # Lines end at "\n" alone, as the writer ends them: str.splitlines() would also split a
    # sentence at U+2028, U+0085 and other characters a reference may hold.
    rows = text.removesuffix("\n").split("\n")[1:] if text else []
    if not rows:
        raise UserError("no translations in the file (empty, or a header line alone)",
                        str(candidate), "pass a file written by validate_perceiver_model.py")
    fields = [row.split("\t") for row in rows]
    bad = next((n for n, f in enumerate(fields, 2) if len(f) != 3), None)
    if bad is not None:
        raise UserError("not a translations file (id, reference, translation)",
                        f"{candidate}:{bad}", "pass a file written by validate_perceiver_model.py")
    return [f[0] for f in fields], [f[1] for f in fields], [f[2] for f in fields]


def scored_split(path, split="test"):
    """The manifest a system's summary says it scored (None without a summary)."""
    summary = find_outputs(path, split).with_name("validation_summary.json")
    return read_summary(summary).get("manifest") if summary.is_file() else None


def check_same_sentences(systems, splits=None):
    """Every system scored the baseline's sentences: the same count, ids and references, in
    order. splits: {name: the manifest its summary says it scored, or None}, to name the
    cause when they differ (the same sentences from two copies of a manifest are fine)."""
    (base_name, (base_ids, base_refs, _)), *others = systems
    for name, (ids, refs, _) in others:
        mine, theirs = (splits or {}).get(name), (splits or {}).get(base_name)
        other_split = (f"{name} was scored on {mine}, {base_name} on {theirs}"
                       if mine and theirs and mine != theirs else None)
        if len(ids) != len(base_ids):
            raise UserError(other_split or f"{name} scored {len(ids)} sentences, {base_name} "
                                           f"{len(base_ids)}", name,
                            "compare systems scored on the same split")
        for n, (a, b, ra, rb) in enumerate(zip(base_ids, ids, base_refs, refs), 1):
            if a != b or ra != rb:
                raise UserError(other_split or f"{name} and {base_name} differ at sentence "
                                               f"{n} ('{b}' vs '{a}')", name,
                                "compare systems scored on the same split, in the same order")


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
            first = i == 0
            # the same score as the baseline (identical outputs, or outputs that differ but
            # score alike): no difference to test, so p = 1. sacrebleu, following multeval,
            # counts only resamples whose difference exceeds the observed one, and reports
            # 1/(n+1) where no resample differs at all (0.00 vs 0.00 on every resample)
            same = hypotheses == named_hypotheses[0][1] or bs[i + 1].score == bs[1].score
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
                     "bootstrap / approximate randomisation, vs the first system; "
                     f"{1 / (n_samples + 1):.4f} is the smallest they can show)")
        for r in systems:
            p = ("baseline" if r["p_bootstrap"] is None else
                 f"p = {r['p_bootstrap']:.4f} / {r['p_randomisation']:.4f}")
            seeds = (f"  seeds: {r['seeds'][0]:.2f} ± {r['seeds'][1]:.2f} (n={r['n']})"
                     if "seeds" in r else "")
            lines.append(f"  {r['system']}: {r['score']:.2f} ({r['mean']:.2f} ± "
                         f"{r['ci']:.2f})  {p}{seeds}")
    return "\n".join(lines)


def run_config(outputs_file):
    """The config.json of the run whose checkpoint wrote these outputs, or None."""
    folder = outputs_file.parent  # RUN/validation_results/ or RUN/results/SPLIT/
    for run_dir in (folder, folder.parent, folder.parent.parent):
        if (run_dir / "config.json").is_file() and (run_dir / "best_model.pt").exists():
            return read_run_config(run_dir / "config.json")
    summary = folder / "validation_summary.json"
    checkpoint = read_summary(summary).get("checkpoint") if summary.is_file() else None
    if checkpoint:
        config = Path(checkpoint).parent / "config.json"
        return read_run_config(config) if config.is_file() else None
    return None


def group_by_seed(paths, split):
    """[[path, ...]]: runs that differ only in --seed, scored with the same generate()
    settings, together (in seed order); anything else alone."""
    def key(found):
        path, config = found
        summary = find_outputs(path, split).with_name("validation_summary.json")
        generation = read_summary(summary).get("generation") if summary.is_file() else None
        return json.dumps([experiment_key(config), generation]) if config else str(path)

    found = [(p, run_config(find_outputs(p, split))) for p in paths]
    groups = seed_groups(found, key, lambda f: f[1]["args"].get("seed") if f[1] else None)
    return [[p for p, _ in sorted(g, key=lambda f: f[1]["args"].get("seed") if f[1] else 0)]
            for g in groups]


def seed_spread(hypotheses_by_seed, references):
    """{metric: (mean, standard deviation)} of each seed's own score."""
    out = {}
    for label, make in METRICS.items():
        scores = [make().corpus_score(h, [references]).score for h in hypotheses_by_seed]
        out[label] = (statistics.fmean(scores), statistics.stdev(scores))
    return out


def compare(paths, split="test", n_samples=1000, group_seeds=True):
    """The command's work: -> rows as paired_tests returns them, each seed group's row with
    its seeds' spread ("seeds": (mean, std), "n"). group_seeds=False: every path alone."""
    groups = group_by_seed(paths, split) if group_seeds else [[p] for p in paths]
    return compare_groups([(group_name(g), g) for g in groups], split, n_samples)


def compare_groups(groups, split="test", n_samples=1000):
    """groups: [(name, [paths])], the baseline first, each a system (its seeds pooled) ->
    rows as compare() returns them."""
    paths = [p for _, g in groups for p in g]
    outputs = {p: read_outputs(p, split) for p in paths}
    check_same_sentences([(p, outputs[p]) for p in paths],
                         {p: scored_split(p, split) for p in paths})
    references = outputs[paths[0]][1]
    sizes = {len(g) for _, g in groups}
    if len(sizes) > 1:
        raise UserError(f"seed groups of different sizes ({', '.join(str(len(g)) for _, g in groups)}"
                        " runs)", " ".join(map(str, paths)), "compare groups with the same "
                        "number of seeds, or pass single runs")
    k = sizes.pop()
    named = [(name, [h for p in g for h in outputs[p][2]]) for name, g in groups]
    rows = paired_tests(named, references * k, n_samples)  # seed i beside seed i when k > 1
    if k > 1:
        for (_, g), *per_metric in zip(groups, *rows.values()):
            spread = seed_spread([outputs[p][2] for p in g], references)
            for label, row in zip(rows, per_metric):
                row.update(seeds=spread[label], n=k)
    return rows


def group_name(paths):
    """A run as given; a seed group by its runs' directory names."""
    if len(paths) == 1:
        return str(paths[0])
    return f"{', '.join(Path(p).name for p in paths)} ({len(paths)} seeds)"


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m sonar_t5.evaluation.significance",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("systems", nargs="+", metavar="PATH",
                   help="the baseline, then the systems to compare with it (runs that "
                        "differ only in --seed are one system)")
    p.add_argument("--split", default="test",
                   help="for run directories: which end-of-training scores (RUN/results/SPLIT)")
    p.add_argument("--n_samples", type=int, default=1000, help="resamples of each test")
    p.add_argument("--seeds_apart", action="store_true",
                   help="compare every run on its own, also runs that differ only in --seed "
                        "(e.g. one seed against another)")
    args = p.parse_args(argv)
    logging.getLogger("sacrebleu").setLevel(logging.WARNING)  # its progress notes
    if len(args.systems) < 2:
        raise UserError("give a baseline and at least one system to compare", "command line")
    if args.n_samples < 10:
        raise UserError(f"--n_samples must be at least 10 (got {args.n_samples})",
                        "command line")
    rows = compare(args.systems, args.split, args.n_samples, not args.seeds_apart)
    if len(next(iter(rows.values()))) < 2:
        raise UserError("every run given is a seed of one experiment: nothing to compare it "
                        "with", " ".join(args.systems), "give another system's runs too, or "
                        "--seeds_apart to compare the seeds with each other")
    print(format_rows(rows, args.n_samples))


if __name__ == "__main__":
    sys.exit(main())
