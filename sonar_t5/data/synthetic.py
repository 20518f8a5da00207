"""Demo data: How2Sign-like instructional sentences whose text is recoverable from features.

Every word has a fixed random prototype vector; a sentence is rendered as 2-4 noisy frames
per word. Deterministic for a seed; written in the same on-disk formats as real data:

    python -m sonar_t5.data.synthetic --output DIR [--num_train --num_val --num_test --feature_dim --seed]

writes DIR/features/{train,val,test}/<id>.npy (float16, (T, D)) and
DIR/manifests/{train,val,test}.tsv (header: id, n_frames, text).
"""
import argparse
from pathlib import Path

import numpy as np

VERBS = ("fold cut paint mix stir pour wash dry clean tie wrap glue sand measure mark hold "
         "press bend roll shape trim sew knit plant water drill fix tighten peel chop slice "
         "bake grill boil season taste serve brush comb braid stretch lift place turn open "
         "close fill empty shake sprinkle spread rinse soak polish scrape hang attach").split()
NOUNS = ("paper board brush bowl spoon knife cup plate pan pot towel rope string ribbon "
         "fabric thread needle glue tape box bottle jar lid handle edge corner surface wall "
         "floor table chair wheel chain pedal tire seat frame nail screw hammer saw drill "
         "plant soil pot seed leaf flower branch root hair wig braid comb mirror dough flour "
         "sugar butter egg onion garlic tomato pepper salt sauce oil water rice pasta cheese "
         "bread guitar string chord fret pick ball bat glove club net paddle horse saddle "
         "bridle hoof dog leash collar treat camera lens tripod sketch canvas pencil "
         "eraser ruler knot sleeve collar button zipper pocket").split()
ADJECTIVES = ("small large clean dry wet soft hard smooth rough thin thick long short "
              "flat round sharp loose tight warm cold fresh heavy light dark bright "
              "wooden metal plastic little whole extra new old").split()
ADVERBS = ("carefully slowly gently firmly quickly evenly lightly tightly again together "
           "completely halfway down up back").split()
PREPOSITIONS = "on into onto under over around through along across behind beside".split()
NAMES = "anna mike sarah david lisa tom maria john kate alex emma ben".split()
TEMPLATES = (
    "i'm going to show you how to {verb} the {noun} {adverb}",
    "now we are going to {verb} the {adj} {noun}",
    "first you want to {verb} your {noun} {prep} the {noun}",
    "make sure you {verb} the {noun} {adverb}",
    "this is a {adj} {noun} that we use to {verb} the {noun}",
    "next we {verb} it {prep} the {adj} {noun}",
    "you can also {verb} the {noun} with a {adj} {noun}",
    "hi my name is {name} and today i'm going to {verb} a {noun}",
    "so just {verb} the {noun} and {verb} it {adverb}",
    "take your {noun} and {verb} it {prep} the {noun}",
)
SLOTS = {"verb": VERBS, "noun": NOUNS, "adj": ADJECTIVES, "adverb": ADVERBS,
         "prep": PREPOSITIONS, "name": NAMES}
SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}


def vocabulary():
    words = {w for template in TEMPLATES for w in template.split() if "{" not in w}
    for choices in SLOTS.values():
        words.update(w for choice in choices for w in choice.split())
    return sorted(words)


def make_sentence(rng):
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    parts = []
    for token in template.split():
        if token.startswith("{"):
            choices = SLOTS[token.strip("{}")]
            token = choices[rng.integers(len(choices))]
        parts.append(token)
    return " ".join(parts)


def render(sentence, prototypes, index, rng, noise=0.3):
    """2-4 noisy frames of each word's prototype -> float16 (T, D)."""
    frames = []
    for word in sentence.split():
        k = int(rng.integers(2, 5))
        frames.append(prototypes[index[word]] + noise * rng.standard_normal(
            (k, prototypes.shape[1])))
    return np.concatenate(frames).astype(np.float16)


def write_split(output, split, count, prototypes, index, seed):
    rng = np.random.default_rng([seed, SPLIT_SEEDS[split]])
    feature_dir = Path(output) / "features" / split
    feature_dir.mkdir(parents=True, exist_ok=True)
    lines = ["id\tn_frames\ttext"]
    for i in range(count):
        sentence = make_sentence(rng)
        features = render(sentence, prototypes, index, rng)
        sample_id = f"{split}_{i:05d}"
        np.save(feature_dir / f"{sample_id}.npy", features)
        lines.append(f"{sample_id}\t{features.shape[0]}\t{sentence}")
    manifest = Path(output) / "manifests" / f"{split}.tsv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")


DEMO_MARKER = "DEMO_DATA.txt"  # beside features/ and manifests/: what made them


def make_demo_data(output, num_train=3000, num_val=200, num_test=200, feature_dim=64, seed=0):
    """Write the demo data set under `output`; returns the output path."""
    words = vocabulary()
    prototypes = np.random.default_rng([seed, 0]).standard_normal((len(words), feature_dim))
    index = {w: i for i, w in enumerate(words)}
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        write_split(output, split, count, prototypes, index, seed)
    (Path(output) / DEMO_MARKER).write_text(
        f"sonar-t5's synthetic demo data (python -m sonar_t5.data.synthetic, seed {seed}): each word is "
        "a few noisy frames of its own random vector, so the text can be read back from the "
        "features. Scores on it show that the pipeline learns, not how good a model is.\n",
        encoding="utf-8")
    return Path(output)


def is_demo_manifest(manifest):
    """The manifest is one of the demo data's (DIR/manifests/SPLIT.tsv beside the marker)."""
    return (Path(manifest).resolve().parent.parent / DEMO_MARKER).is_file()


def demo_paths(output):
    root = Path(output)
    return {split: (root / "features" / split, root / "manifests" / f"{split}.tsv")
            for split in SPLIT_SEEDS}


def main(argv=None):
    p = argparse.ArgumentParser(description="Write the deterministic demo data set.")
    p.add_argument("--output", required=True, help="directory to write into")
    p.add_argument("--num_train", type=int, default=3000)
    p.add_argument("--num_val", type=int, default=200)
    p.add_argument("--num_test", type=int, default=200)
    p.add_argument("--feature_dim", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    make_demo_data(args.output, args.num_train, args.num_val, args.num_test,
                   args.feature_dim, args.seed)
    print(f"demo data ({len(vocabulary())} words) written to {args.output}")


if __name__ == "__main__":
    main()
