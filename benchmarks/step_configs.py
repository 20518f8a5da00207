"""The three training configurations the step benchmarks measure, as training-script flags, and
the data they read: a slice of the realistic text benchmark's data (python -m
benchmarks.text_data), so every step is a real sentence of real length.

- recipe_embedding, recipe_tokens: configs/scratch_decoder.yaml (a t5-tiny decoder from
  scratch, 128-wide bridge, 16 latents), on the 1024-d sentence embeddings (identity encoder)
  or on the token features (a 2-layer feature encoder from scratch, token input).
- guide: the original guide's shapes: a t5-small-shaped decoder with T5's 32,128-piece
  vocabulary (random weights saved as a local model directory: no hub), the 768-wide
  Perceiver with 64 latents on the 1024-d embedding, batch 16, learning rate 1e-4.
"""
from pathlib import Path

from sonar_t5.common.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

# name -> (feature directory under --data, flags). --output_dir and the data come from
# step_data(); every run is on the CPU with the threads the benchmark says.
# The recipe's batch, vocabulary and warm-up are said here: the defaults would choose the
# last two from the slice of the data a benchmark reads, not from the 6,400 sentences
# (where they are 1,000 pieces and 200 steps).
RECIPE_ON_THE_BENCHMARK = ["--batch_size", "32", "--vocab_size", "1000", "--warmup_steps", "200"]
CONFIGS = {
    "recipe_embedding": ("features_embedding", [
        "--config", str(ROOT / "configs" / "scratch_decoder.yaml"), "--identity_encoder",
        "--resampler_input", "pooled", *RECIPE_ON_THE_BENCHMARK]),
    "recipe_tokens": ("features_tokens", [
        "--config", str(ROOT / "configs" / "scratch_decoder.yaml"),
        "--resampler_input", "tokens", *RECIPE_ON_THE_BENCHMARK]),
    "guide": ("features_embedding", [
        "--t5_model", "{guide_t5}", "--identity_encoder", "--resampler_input", "pooled",
        "--batch_size", "16", "--learning_rate", "1e-4"]),
}
# The same in every configuration: no time budget or early stop, greedy validation of a few
# sentences, no end-of-training scoring (what is timed is the training epoch).
COMMON = ["--device", "cpu", "--num_workers", "0", "--epochs", "1", "--time_budget", "0",
          "--num_beams", "1", "--max_new_tokens", "8", "--skip_final_scoring", "--overwrite"]
VAL_SAMPLES = 8


def batch_size(name):
    flags = CONFIGS[name][1]
    return int(flags[flags.index("--batch_size") + 1])


def step_data(data, work, name, steps):
    """-> the flags that point a run of `name` at exactly `steps` full training batches and
    VAL_SAMPLES validation sentences of the text benchmark's data under `data`, writing
    manifests (and the guide's model directory) under `work`."""
    features, flags = CONFIGS[name]
    work.mkdir(parents=True, exist_ok=True)
    manifests = {}
    for split, count in (("train", steps * batch_size(name)), ("val", VAL_SAMPLES)):
        lines = (Path(data) / "manifests" / f"{split}.tsv").read_text().splitlines()
        if len(lines) - 1 < count:
            raise UserError(f"{split}.tsv has {len(lines) - 1} rows, {count} needed",
                            str(Path(data) / "manifests" / f"{split}.tsv"),
                            "ask for fewer --steps")
        manifests[split] = work / f"{split}_{count}.tsv"
        manifests[split].write_text("\n".join(lines[:count + 1]) + "\n")
    flags = [f.format(guide_t5=guide_t5(work, data)) if "{" in f else f for f in flags]
    return [*COMMON, *flags,
            "--train_features", str(Path(data) / features / "train"),
            "--train_manifest", str(manifests["train"]),
            "--val_features", str(Path(data) / features / "val"),
            "--val_manifest", str(manifests["val"])]


def guide_t5(work, data):
    """A t5-small-shaped T5 with random weights and a SentencePiece model trained on the
    benchmark's text, saved as a local model directory (made once under `work`)."""
    path = work / "t5_small_shaped"
    if not (path / "spiece.model").is_file():
        from transformers import T5ForConditionalGeneration

        from sonar_t5.models.t5_decoder import preset_config
        from sonar_t5.models.tokenizer import train_tokenizer
        config = preset_config("scratch-t5-small", vocab_size=32128)  # t5-small's shape
        T5ForConditionalGeneration(config).save_pretrained(path)
        rows = (Path(data) / "manifests" / "train.tsv").read_text().splitlines()[1:]
        texts = [row.split("\t")[-1] for row in rows]
        (path / "spiece.model").write_bytes(train_tokenizer(texts, 1000).model_bytes)
    return str(path)
