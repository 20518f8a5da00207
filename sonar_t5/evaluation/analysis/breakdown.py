"""What the report counts: each statistic of the analysis page, computed from references and
hypotheses alone (no model), every score by sacrebleu.

Words are sacrebleu's 13a tokens (the tokenisation of the headline BLEU), lowercased for word
matching; a content word is such a token with a letter or digit in it that is not on the
function-word list below.
"""
import re
from collections import Counter
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

TOKENIZE = Tokenizer13a()

# English function words (articles, pronouns, auxiliaries, prepositions, conjunctions, common
# adverbs): a hypothesis that shares only these with its reference says nothing of its content.
FUNCTION_WORDS = frozenset("""
a an the this that these those there here it its it's i me my mine we us our ours you your
yours he him his she her hers they them their theirs one ones what which who whom whose
is am are was were be been being do does did doing done have has had having will would shall
should can could may might must 's 're 've 'll 'd 'm n't not no nor
and or but if then so because as than too very just also only even still yet
of to in on at by for with from into onto about over under up down out off through between
after before again once all any both each few more most other some such own same
how when where why while until against during above below
let get got go going gonna wanna ok okay oh yeah well now really like
""".split())

# A word's frequency in the training text, in compare-mt's buckets: the words a model has
# rarely or never seen are where it fails first.
FREQUENCY_BUCKETS = ((0, 0), (1, 1), (2, 4), (5, 9), (10, 99), (100, 999), (1000, None))


def words(text):
    return TOKENIZE(text).lower().split()


def content_words(text):
    return {w for w in words(text) if w not in FUNCTION_WORDS and re.search(r"\w", w)}


@dataclass
class SentenceScore:
    bleu: float  # sentence BLEU (sacrebleu, 13a, exponential smoothing, effective order)
    chrf: float
    length_ratio: float  # hypothesis tokens / reference tokens (13a)


def sentence_scores(hypotheses, references):
    """One SentenceScore per sentence."""
    bleu, chrf = BLEU(effective_order=True), CHRF()
    return [SentenceScore(bleu.sentence_score(h, [r]).score, chrf.sentence_score(h, [r]).score,
                          len(words(h)) / max(len(words(r)), 1))
            for h, r in zip(hypotheses, references)]


def word_frequencies(texts):
    return Counter(w for text in texts for w in words(text))


def word_f_by_frequency(hypotheses, references, frequencies):
    """compare-mt's word accuracy: each reference word type is put in the bucket of its
    frequency (frequencies: word -> count, from the training text), and a bucket's
    precision, recall and F-measure count each sentence's matched words (the smaller of the
    word's counts in hypothesis and reference). -> [(bucket, reference words, F, precision,
    recall)]; buckets with no reference word are left out."""
    matched, in_ref, in_hyp = Counter(), Counter(), Counter()
    for h, r in zip(hypotheses, references):
        hyp, ref = Counter(words(h)), Counter(words(r))
        for word in hyp.keys() | ref.keys():
            bucket = frequency_bucket(frequencies.get(word, 0))
            matched[bucket] += min(hyp[word], ref[word])
            in_ref[bucket] += ref[word]
            in_hyp[bucket] += hyp[word]
    rows = []
    for bucket in FREQUENCY_BUCKETS:
        if not in_ref[bucket]:
            continue
        precision = matched[bucket] / in_hyp[bucket] if in_hyp[bucket] else 0.0
        recall = matched[bucket] / in_ref[bucket]
        f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append((frequency_label(bucket), in_ref[bucket], f, precision, recall))
    return rows


def frequency_bucket(count):
    return next(b for b in FREQUENCY_BUCKETS if b[0] <= count and (b[1] is None or count <= b[1]))


def frequency_label(bucket):
    low, high = bucket
    return str(low) if low == high else f"{low}-{high}" if high else f"{low}+"


def no_content_overlap(hypotheses, references):
    """-> (indices of the sentences whose hypothesis shares no content word with its
    reference, how many references have a content word at all: the share's denominator)."""
    found, counted = [], 0
    for i, (h, r) in enumerate(zip(hypotheses, references)):
        ref = content_words(r)
        if ref:
            counted += 1
            if not ref & content_words(h):
                found.append(i)
    return found, counted


def repeated_outputs(hypotheses, top=15):
    """The hypotheses written more than once, most frequent first -> [(text, count)]: stock
    phrases, and at the extreme a collapsed model's one sentence."""
    return [(text, n) for text, n in Counter(hypotheses).most_common(top) if n > 1]


def ngram_differences(hypotheses_a, hypotheses_b, references, top=10, max_order=4,
                      alpha=1.0):
    """compare-mt's n-gram comparison: for each reference n-gram (n = 1..max_order), how often
    each system matches it (a sentence counts the smaller of its counts in hypothesis and
    reference); scored (a + alpha) / (a + b + 2 alpha), so an n-gram matched often and mostly
    by one system ranks first. -> ([(ngram, a, b)] that A gets right more, [...] that B does)."""
    matches_a, matches_b = Counter(), Counter()
    for ha, hb, r in zip(hypotheses_a, hypotheses_b, references):
        ref = ngrams(words(r), max_order)
        matches_a.update(ref & ngrams(words(ha), max_order))
        matches_b.update(ref & ngrams(words(hb), max_order))
    scored = [((matches_a[g] + alpha) / (matches_a[g] + matches_b[g] + 2 * alpha), g)
              for g in matches_a.keys() | matches_b.keys()]
    scored.sort(key=lambda item: (item[0], item[1]))
    rows = lambda items: [(" ".join(g), matches_a[g], matches_b[g]) for _, g in items]  # noqa
    return rows(reversed(scored[-top:])), rows(scored[:top])


def ngrams(tokens, max_order):
    return Counter(tuple(tokens[i:i + n]) for n in range(1, max_order + 1)
                   for i in range(len(tokens) - n + 1))


def largest_differences(scores_a, scores_b, top=10):
    """Sentence indices by sentence BLEU of B minus A -> (where A is most ahead, where B is)."""
    order = sorted(range(len(scores_a)), key=lambda i: (scores_b[i].bleu - scores_a[i].bleu, i))
    ahead_a = [i for i in order[:top] if scores_b[i].bleu < scores_a[i].bleu]
    ahead_b = [i for i in reversed(order[-top:]) if scores_b[i].bleu > scores_a[i].bleu]
    return ahead_a, ahead_b
