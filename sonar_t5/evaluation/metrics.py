"""The numbers: BLEU-1..4 under the field's two conventions, chrF (sacrebleu), ROUGE-L
(rouge-score), diversity (mode collapse), lengths, verdicts."""
import importlib.metadata
from collections import Counter
from dataclasses import dataclass

import numpy as np
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

COLLAPSE_UNIQUE_RATIO = 0.5  # below 50% unique translations the model has collapsed (the original guide's threshold)

# How2Sign's published test BLEU-4 (sacrebleu's 13a convention), for placing a score on
# How2Sign-shaped data: (BLEU, system). Elsewhere no range is known, and none is claimed.
HOW2SIGN_PUBLISHED = ((8.03, "How2Sign alone (Tarrés et al. 2023)"),
                      (12.39, "YouTube-ASL"), (14.9, "Uni-Sign"),
                      (15.5, "SSVP-SLT, pretrained on YouTube-ASL and How2Sign"))
NOT_LEARNING_BLEU = 1.0  # below this, on any data, the output does not follow the input


# The field scores BLEU two ways, and a number is comparable only with numbers scored the same
# way. BLEU-n is the cumulative score with the maximum n-gram order set to n, as both report it.
BLEU_CONVENTIONS = {
    # ssvp_slt (translation/engine_translation.py) and sacrebleu's defaults: 13a tokenisation,
    # cased, exponential smoothing. "bleu" alone is its BLEU-4, the headline number.
    "bleu": dict(tokenize="13a", smooth_method="exp"),
    # Uni-Sign (SLRT_metrics.bleu): its vendored sacrebleu's raw_corpus_bleu, no tokenisation,
    # floor smoothing with a floor of 0, effective order.
    "raw_bleu": dict(tokenize="none", smooth_method="floor", smooth_value=0.0,
                     effective_order=True),
}
ROUGE_SIGNATURE = f"rouge-score {importlib.metadata.version('rouge-score')}|rougeL|F1|no stemmer|" \
                  "mean over sentences"


def translation_metrics(hypotheses, references):
    """Every corpus-level measure of a set of translations -> {name: value}, and each one's
    signature as {name}_signature (sacrebleu's, so a reader knows how to compare).

    The one place a metric is added. Everything else takes what this returns, by name: the
    epoch record (val_{name}) and its console line, the trackers (val/{name}), the
    validation summary ({name}), the results table and the model card. How a metric is shown
    is METRIC_DISPLAY's entry below (a default otherwise).
    """
    found = {}
    for prefix, settings in BLEU_CONVENTIONS.items():
        for order in range(1, 5):
            bleu = BLEU(max_ngram_order=order, **settings)
            name = "bleu" if (prefix, order) == ("bleu", 4) else f"{prefix}{order}"
            found[name] = bleu.corpus_score(hypotheses, [references]).score
            found[f"{name}_signature"] = str(bleu.get_signature())
    chrf = CHRF()
    found["chrf"] = chrf.corpus_score(hypotheses, [references]).score
    found["chrf_signature"] = str(chrf.get_signature())
    found["rouge_l"] = rouge_l(hypotheses, references)
    found["rouge_l_signature"] = ROUGE_SIGNATURE
    found["unique_ratio"] = diversity(hypotheses)["unique_ratio"]
    return found


def rouge_l(hypotheses, references):
    """ROUGE-L F1 x 100, the mean over sentences (rouge-score, as ssvp_slt's HF evaluate)."""
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    scores = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses,
                                                                           references)]
    return 100 * sum(scores) / len(scores) if scores else 0.0


@dataclass(frozen=True)
class Display:
    label: str  # in tables and the epoch line
    line_format: str  # in the epoch line
    decimals: int  # in tables
    headline: bool = True  # in the epoch line and the table by default


METRIC_DISPLAY = {
    "bleu": Display("BLEU", "{:.2f}", 2), "chrf": Display("chrF", "{:.1f}", 1),
    "rouge_l": Display("ROUGE-L", "{:.1f}", 1), "unique_ratio": Display("unique", "{:.0%}", 2),
    **{f"bleu{n}": Display(f"BLEU-{n}", "{:.2f}", 2, headline=False) for n in (1, 2, 3)},
    **{f"raw_bleu{n}": Display(f"raw BLEU-{n}", "{:.2f}", 2, headline=n == 4)
       for n in (1, 2, 3, 4)},
    # not a translation metric, but a column of the results table and a number of each epoch
    "cond_gap": Display("cond. gap", "{:.3f}", 3, headline=False),
}


def display(name):
    return METRIC_DISPLAY.get(name, Display(name, "{:.3g}", 3))


def epoch_metrics(record):
    """{name: value} of a training_history.json record's translation metrics (val_{name});
    records written before unique_ratio was one of them call it diversity."""
    found = {k[4:]: v for k, v in record.items() if k.startswith("val_") and k != "val_loss"}
    if "unique_ratio" not in found and isinstance(record.get("diversity"), (int, float)):
        found["unique_ratio"] = record["diversity"]
    return found


def metric_names(headline_only=False):
    """The measures translation_metrics() returns, in its order (signatures aside); with
    headline_only, those shown in the epoch line and the table by default."""
    return [k for k in translation_metrics(["a b"], ["a b"]) if not k.endswith("_signature")
            and (display(k).headline or not headline_only)]


def _distinct(hypotheses, n):
    ngrams = [tuple(words[i:i + n]) for words in (h.split() for h in hypotheses)
              for i in range(len(words) - n + 1)]
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0


def diversity(hypotheses):
    counts = Counter(hypotheses)
    most_common, count = counts.most_common(1)[0] if counts else ("", 0)
    total = len(hypotheses)
    unique_ratio = len(counts) / total if total else 0.0
    return {"total": total, "unique": len(counts), "unique_ratio": unique_ratio,
            "most_common": most_common, "most_common_count": count,
            "most_common_pct": 100.0 * count / total if total else 0.0,
            "distinct_1": _distinct(hypotheses, 1), "distinct_2": _distinct(hypotheses, 2),
            "empty": sum(1 for h in hypotheses if not h.strip()),
            "collapsed": unique_ratio < COLLAPSE_UNIQUE_RATIO}


def length_stats(texts):
    lengths = np.array([len(t.split()) for t in texts] or [0])
    return {"mean": float(lengths.mean()), "std": float(lengths.std()),
            "min": int(lengths.min()), "max": int(lengths.max())}


def bleu_verdict(bleu, data=None):
    """-> (verdict, what it means / what to do), relative to the data and nothing else.
    data: "how2sign" (placed against the published range), "demo" (the synthetic demo data,
    whose scores say only that the pipeline learns) or None (no range is known)."""
    if bleu < NOT_LEARNING_BLEU:
        return ("not learning", "the translations do not follow the input: check the "
                                "features, the conditioning gap and diversity first")
    if data == "demo":
        return ("demo data", "the synthetic demo data spells its text out in the features: "
                             "this shows the pipeline learns, not how good a model is")
    if data == "how2sign":
        low, high = HOW2SIGN_PUBLISHED[0][0], HOW2SIGN_PUBLISHED[-1][0]
        published = "; ".join(f"{b:.1f} {system}" for b, system in HOW2SIGN_PUBLISHED)
        place = ("below" if bleu < low else "above" if bleu > high else "within")
        return (f"{place} the published How2Sign range",
                f"How2Sign test BLEU-4 published ({low:.1f}-{high:.1f}): {published}; "
                "compare like with like: the same split, both scored with sacrebleu's 13a")
    return ("no reference range", "no published range for this data: compare with a "
                                  "baseline scored on the same split (python -m "
                                  "sonar_t5.evaluation.significance BASELINE THIS_RUN)")


def diversity_verdict(div):
    if div["collapsed"]:
        return (f"MODE COLLAPSE: only {div['unique_ratio']:.0%} unique translations; "
                f"'{div['most_common']}' is {div['most_common_pct']:.1f}% of outputs")
    return f"healthy diversity: {div['unique_ratio']:.0%} unique translations"
