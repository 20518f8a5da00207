"""The report's numbers gathered into one page: headline scores, buckets, word accuracy,
stock outputs, pairwise differences and the sentence table, rendered through report.html.j2
into one self-contained HTML file (styles, script and figures inside it)."""
import base64
import io
import statistics
import time
from pathlib import Path

import jinja2

from ..metrics import translation_metrics
from ..report import (LENGTH_BUCKETS, bleu_by_length, bucket_bars, length_bucket, length_label,
                      plt)
from ..significance import compare_groups
from . import breakdown

TEMPLATE = "report.html.j2"


def analyse(ids, references, systems, *, frequencies=None, frequency_source=None,
            n_samples=1000, split="test", attention=(), command=""):
    """-> the template's context: every number on the page. frequencies: word -> count in the
    training text (None: counted in these references, and said so)."""
    if frequencies is None:
        frequencies = breakdown.word_frequencies(references)
        frequency_source = "the references themselves (give --train_manifest for the training text)"
    names = [s.name for s in systems]
    scores = {s.name: breakdown.sentence_scores(s.shown, references) for s in systems}
    missing = {s.name: set(breakdown.no_content_overlap(s.shown, references)[0])
               for s in systems}
    rows = [{"id": ids[i], "reference": references[i],
             "bucket": length_label(length_bucket(len(references[i].split()))),
             "systems": [{"text": s.shown[i], "score": scores[s.name][i],
                          "no_overlap": i in missing[s.name]} for s in systems]}
            for i in range(len(ids))]
    # seeds pooled: their references repeated; counts shown per seed (the sentences' own)
    by_length, word_f = {}, {}
    for s in systems:
        seeds, refs = len(s.hypotheses), references * len(s.hypotheses)
        by_length[s.name] = [(b, n // seeds, *rest) for b, n, *rest in
                             bleu_by_length(refs, s.pooled)]
        word_f[s.name] = [(b, n // seeds, *rest) for b, n, *rest in
                          breakdown.word_f_by_frequency(s.pooled, refs, frequencies)]
    return {
        "title": f"What the model gets wrong: {', '.join(names)}",
        "written": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command, "split": split,
        "sentences": len(ids), "names": names,
        "systems": [system_facts(s) for s in systems],
        "headline": headline(systems, references, n_samples, split),
        "n_samples": n_samples,
        "by_length": by_length,
        "length_buckets": [length_label(b) for b in LENGTH_BUCKETS],
        "word_f": word_f, "frequency_source": frequency_source,
        "frequency_buckets": [breakdown.frequency_label(b) for b in breakdown.FREQUENCY_BUCKETS],
        "no_overlap": [overlap_facts(s, references) for s in systems],
        "repeated": {s.name: breakdown.repeated_outputs(s.shown) for s in systems},
        "pairs": [pair_facts(systems[0], other, scores, rows, references)
                  for other in systems[1:]],
        "figures": figures(by_length, word_f),
        "attention": list(attention),
        "rows": rows,
    }


def system_facts(system):
    return {"name": system.name, "files": [str(f) for f in system.files],
            "seeds": len(system.hypotheses),
            "checkpoint": system.summary.get("checkpoint"),
            "generation": system.summary.get("generation")}


def headline(systems, references, n_samples, split):
    """Per system: BLEU and chrF with their 95% intervals (seeds pooled) and p-values against
    the first system, sacrebleu's paired tests (which refuse systems of different numbers of
    seeds); raw BLEU-4, ROUGE-L, unique outputs and the length ratio as the mean over its
    seeds; the conventions' signatures."""
    groups = [(s.name, [str(f) for f in s.files]) for s in systems]
    tests = compare_groups(groups, split, n_samples)
    out = []
    for i, system in enumerate(systems):
        per_seed = [translation_metrics(h, references) for h in system.hypotheses]
        row = {"name": system.name, "seeds": len(system.hypotheses)}
        for label, key in (("BLEU", "bleu"), ("chrF", "chrf")):
            test = tests[label][i]
            row[key] = {"score": test["seeds"][0] if "seeds" in test else test["score"],
                        "spread": test["seeds"][1] if "seeds" in test else None,
                        "low": test["mean"] - test["ci"], "high": test["mean"] + test["ci"],
                        "p_bootstrap": test["p_bootstrap"],
                        "p_randomisation": test["p_randomisation"]}
        for key in ("raw_bleu4", "rouge_l", "unique_ratio"):
            row[key] = mean_spread([m[key] for m in per_seed])
        row["length_ratio"] = mean_spread([length_ratio(h, references)
                                           for h in system.hypotheses])
        row["signatures"] = {k: per_seed[0][f"{k}_signature"]
                             for k in ("bleu", "raw_bleu4", "chrf", "rouge_l")}
        out.append(row)
    return out


def length_ratio(hypotheses, references):
    tokens = lambda texts: sum(len(breakdown.words(t)) for t in texts)  # noqa: E731
    return tokens(hypotheses) / max(tokens(references), 1)


def mean_spread(values):
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


def overlap_facts(system, references):
    """The share of hypotheses with no content word of their reference, over the seeds."""
    found = [breakdown.no_content_overlap(h, references) for h in system.hypotheses]
    shares = [len(indices) / counted if counted else 0.0 for indices, counted in found]
    return {"name": system.name, "share": mean_spread(shares), "count": len(found[0][0]),
            "counted": found[0][1]}


def pair_facts(baseline, other, scores, rows, references, top=10):
    """baseline against other: the n-grams each matches more often (seeds pooled), and the
    sentences with the largest sentence-BLEU differences (the table's shown seeds)."""
    more_base, more_other = breakdown.ngram_differences(
        baseline.pooled, other.pooled, references * len(baseline.hypotheses), top=top)
    ahead_base, ahead_other = breakdown.largest_differences(scores[baseline.name],
                                                            scores[other.name], top)
    sentence = lambda i: {"id": rows[i]["id"], "reference": references[i],  # noqa: E731
                          "a": baseline.shown[i], "b": other.shown[i],
                          "a_bleu": scores[baseline.name][i].bleu,
                          "b_bleu": scores[other.name][i].bleu}
    return {"a": baseline.name, "b": other.name, "more_a": more_base, "more_b": more_other,
            "ahead_a": [sentence(i) for i in ahead_base],
            "ahead_b": [sentence(i) for i in ahead_other]}


def figures(by_length, word_f):
    """The page's figures as data: URIs (PNG), so the file needs nothing beside it."""
    buckets = [length_label(b) for b in LENGTH_BUCKETS]
    ratio = {name: [(b, n, r) for b, n, _, r in rows] for name, rows in by_length.items()}
    frequency = [breakdown.frequency_label(b) for b in breakdown.FREQUENCY_BUCKETS]
    return {
        "bleu_by_length": data_uri(bucket_bars(
            {n: [(b, c, v) for b, c, v, _ in rows] for n, rows in by_length.items()},
            "BLEU (sacrebleu, 13a)", buckets=buckets)),
        "length_ratio": data_uri(bucket_bars(
            ratio, "length ratio (hypothesis / reference tokens)", buckets=buckets,
            reference_line=1.0)),
        "word_f": data_uri(bucket_bars(
            {n: [(b, c, 100 * f) for b, c, f, _, _ in rows] for n, rows in word_f.items()},
            "word F-measure (%)", buckets=frequency,
            xlabel="the word's frequency in the training text (reference words)")),
    }


def data_uri(fig, dpi=110):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render(context):
    """The page's HTML. Autoescaping makes every reference, hypothesis and id text, never
    markup: a sentence holding <script> is shown, not run."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["num"] = lambda value, digits=2: (
        "–" if value is None else f"{value:.{digits}f}")
    return environment.get_template(TEMPLATE).render(**context)
