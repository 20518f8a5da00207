"""benchmarks/text_data.py and text_benchmark.py: which sentences are kept, the features'
shapes, determinism, and the commands a benchmark run is made of. The real MiniLM wheel is an
optional benchmark dependency; here a tiny random BERT of the same kind stands in for it."""
import json

import numpy as np
import pytest

from benchmarks import text_benchmark, text_data
from sonar_t5.common.errors import UserError

SYNOPSES = [
    "fast array facility to the Python language",
    "fast array facility to the Python language",  # exact duplicate
    "fast array facility for something else entirely",  # same first three words
    "tool to fetch results when program execution fails",
    "library for parsing and writing YAML files quickly",
    "GNU C compiler",  # too short
    "library 2 for the version 3 of something",  # digits
    "plugin (for Lua) scripting in the editor",  # brackets
    " ".join(["word"] * 26),  # too long
    "set of metaclasses to support asynchronous operations",
    "virtual keyboard for the audio connection kit",
]


def test_sentences_are_filtered_deduplicated_and_seeded():
    chosen = text_data.choose_sentences(SYNOPSES, 5, seed=0)
    assert sorted(chosen) == sorted([
        "fast array facility for something else entirely",  # first of its family, sorted
        "tool to fetch results when program execution fails",
        "library for parsing and writing YAML files quickly",
        "set of metaclasses to support asynchronous operations",
        "virtual keyboard for the audio connection kit"])
    assert chosen == text_data.choose_sentences(SYNOPSES, 5, seed=0)
    assert chosen != text_data.choose_sentences(SYNOPSES, 5, seed=3)
    with pytest.raises(UserError, match="apt-get update"):
        text_data.choose_sentences(SYNOPSES, 6, seed=0)


@pytest.fixture
def tiny_bert(tmp_path, monkeypatch):
    """A 2-layer, 32-d random BERT and a word-level tokenizer over the synopses' words."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast
    words = sorted({w for s in SYNOPSES for w in s.lower().split()})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64)).eval()
    monkeypatch.setattr(text_data, "debian_synopses", lambda: SYNOPSES)
    monkeypatch.setattr(text_data, "load_minilm", lambda: (tokenizer, model))
    return tokenizer


def test_benchmark_data_in_the_toolkits_formats(tiny_bert, tmp_path):
    counts = {"train": 3, "val": 1, "test": 1}
    info = text_data.make_text_benchmark(tmp_path / "a", counts, seed=0)
    root = tmp_path / "a"
    for split, count in counts.items():
        rows = (root / "manifests" / f"{split}.tsv").read_text().splitlines()
        assert rows[0] == "id\tn_frames\ttext" and len(rows) == count + 1
        for row in rows[1:]:
            sample_id, n_frames, text = row.split("\t")
            n_words = len(tiny_bert(text, add_special_tokens=False)["input_ids"])
            frames = np.load(root / "features_tokens" / split / f"{sample_id}.npy")
            assert frames.dtype == np.float16 and frames.shape[1] == 32
            assert len(frames) == int(n_frames) and 2 * n_words <= len(frames) <= 4 * n_words
            embedding = np.load(root / "features_embedding" / split / f"{sample_id}.npy")
            assert embedding.shape == (1, 1024) and embedding.dtype == np.float16
            # The lift keeps the sentence embedding's unit length.
            assert np.linalg.norm(embedding.astype(np.float32)) == pytest.approx(1, abs=2e-3)
    saved = json.loads((root / "benchmark_data.json").read_text())
    assert saved == json.loads(json.dumps(info)) and saved["splits"] == counts
    # Deterministic: a second build is the same, file for file.
    text_data.make_text_benchmark(tmp_path / "b", counts, seed=0)
    for path in root.rglob("*.npy"):
        np.testing.assert_array_equal(np.load(path), np.load(tmp_path / "b" / path.relative_to(root)))


def flag_values(command):
    """{--flag: value, or True for a switch}."""
    values = {}
    for i, word in enumerate(command):
        if word.startswith("--"):
            following = command[i + 1] if i + 1 < len(command) else "--"
            values[word] = True if following.startswith("--") else following
    return values


def test_benchmark_commands(tmp_path):
    train = text_benchmark.train_command(tmp_path, "embedding_projection", tmp_path / "run",
                                         15, 2, 1, recipe=True, extra=["--word_dropout", "0.1"])
    flags = flag_values(train)
    assert flags["--train_features"] == str(tmp_path / "features_embedding" / "train")
    assert flags["--bridge"] == "projection" and flags["--identity_encoder"] is True
    assert flags["--time_budget"] == "15" and flags["--seed"] == "2"
    assert flags["--config"].endswith("configs/scratch_decoder.yaml") and flags["--word_dropout"] == "0.1"
    assert flags["--test_features"] == str(tmp_path / "features_embedding" / "test")
    assert flags["--test_manifest"] == str(tmp_path / "manifests" / "test.tsv")


@pytest.mark.slow
def test_the_benchmark_command_trains_scores_the_test_split_and_makes_the_table(
        tiny_bert, tmp_path, monkeypatch):
    nouns = "tool library plugin daemon font game server editor viewer driver".split()
    more = [f"{a} for {b} and {c} files" for a in nouns for b in nouns[:2] for c in nouns[:1]]
    monkeypatch.setattr(text_data, "debian_synopses", lambda: SYNOPSES + more)
    data = tmp_path / "data"
    text_data.make_text_benchmark(data, {"train": 6, "val": 2, "test": 2}, seed=0)
    out = tmp_path / "bench"
    argv = ["--data", str(data), "--output", str(out), "--settings", "embedding_projection",
            "--seeds", "1", "2", "--minutes", "0.02", "--parallel", "1",
            "--extra", "--hidden_dim 32 --num_latents 4 --max_new_tokens 8"]
    text_benchmark.main(argv)
    runs = sorted(p.name for p in (out / "defaults").iterdir() if p.is_dir())
    assert runs == ["embedding_projection_hidden_dim32_num_latents4_max_new_tokens8"
                    f"_seed{seed}" for seed in (1, 2)]
    table = (out / "defaults" / "results.md").read_text()
    row = [line for line in table.splitlines() if "max_new_tokens8_seed{1,2} " in line]
    assert len(row) == 1 and "| projection |" in row[0] and "±" in row[0]  # two seeds, one row
    summary = json.loads((out / "defaults" / runs[0] / "results" / "test" / "validation_summary.json")
                         .read_text())
    assert summary["num_samples"] == 2 and summary["generation"]["num_beams"] == 4
    # Finished runs are skipped: a second call trains nothing and makes the same table.
    text_benchmark.main(argv)
    assert (out / "defaults" / "results.md").read_text() == table
