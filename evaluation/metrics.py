"""The numbers: sacrebleu BLEU and chrF, diversity (mode collapse), lengths, verdicts."""
from collections import Counter

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

COLLAPSE_UNIQUE_RATIO = 0.5  # below 50% unique translations the model has collapsed (the original guide's threshold)

# The original guide's table: (lower bound, verdict, suggested action).
BLEU_VERDICTS = (
    (10.0, "excellent", "ready for the thesis; try beam search settings for the last points"),
    (8.0, "good", "solid; longer training or an unfrozen encoder may add a few points"),
    (5.0, "moderate", "learning but weak: unfreeze the encoder, train longer, tune the LR"),
    (3.0, "poor", "check the data and the conditioning gap; try --resampler_input tokens"),
    (float("-inf"), "failed", "the model is not using its input: check features, the "
                              "conditioning gap and diversity before anything else"),
)


def corpus_scores(hypotheses, references):
    bleu, chrf = BLEU(), CHRF()
    return {"bleu": bleu.corpus_score(hypotheses, [references]).score,
            "bleu_signature": str(bleu.get_signature()),
            "chrf": chrf.corpus_score(hypotheses, [references]).score}


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


def bleu_verdict(bleu):
    return next((name, action) for bound, name, action in BLEU_VERDICTS if bleu > bound)


def diversity_verdict(div):
    if div["collapsed"]:
        return (f"MODE COLLAPSE: only {div['unique_ratio']:.0%} unique translations; "
                f"'{div['most_common']}' is {div['most_common_pct']:.1f}% of outputs")
    return f"healthy diversity: {div['unique_ratio']:.0%} unique translations"
