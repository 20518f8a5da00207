"""The frozen-encoder cache on disk: its key, reuse, rebuilds, killed and failed builds,
list/clear, and its use by a second run and by validation."""
import copy
import errno
import json
import os
import shutil

import pytest
import torch

import sonar_t5.data.encoder_cache.build as cache_build
from sonar_t5.common.errors import UserError
from sonar_t5.data.dataset import Collator, FeatureDataset, make_loader
from sonar_t5.data.encoder_cache import cached_loaders

from .conftest import assert_user_error, run_patched, run_script, train, train_argv

CPU = torch.device("cpu")


def loader_for(data, tokenizer, max_frames=0):
    dataset = FeatureDataset(data / "manifests" / "train.tsv", data / "features" / "train",
                             max_frames=max_frames)
    return make_loader(dataset, Collator(tokenizer), 16, shuffle=True)


def cache(model, loader, cache_dir):
    """-> (the loader served from the cache, its info)."""
    (served,), infos = cached_loaders(model, {"train": loader}, cache_dir, CPU, "fp32",
                                      show=False)
    return served, infos["train"]


@pytest.fixture
def data(tiny_data, tmp_path):
    """A copy of the tiny data set that a test may touch and extend."""
    return shutil.copytree(tiny_data, tmp_path / "data")


def test_reuse_on_identical_key_and_rebuild_when_any_part_changes(tiny_model, data, tmp_path):
    model, tokenizer = tiny_model
    root = tmp_path / "cache"
    served, first = cache(model, loader_for(data, tokenizer), root)
    assert not first["reused"]
    # What the cache serves is what the encoder computes (token states kept as float16).
    item = served.dataset[5]
    x = served.dataset.source[5]["inputs"]
    with torch.no_grad():
        expected, _ = model.encode(x[None], torch.ones(1, len(x), dtype=torch.bool))
    assert item["encoded"] and item["inputs"].dtype == torch.float32
    torch.testing.assert_close(item["inputs"], expected[0], rtol=1e-3, atol=1e-3)

    _, again = cache(model, loader_for(data, tokenizer), root)
    assert again["reused"] and again["key"] == first["key"]

    changed_weights = copy.deepcopy(model)
    with torch.no_grad():
        next(changed_weights.encoder.parameters()).add_(1e-3)
    changed_statistics = copy.deepcopy(model)
    changed_statistics.feature_mean.fill_(0.1)
    keys = {first["key"]}
    for what, make in [
        ("weights", lambda: cache(changed_weights, loader_for(data, tokenizer), root)),
        ("normalisation", lambda: cache(changed_statistics, loader_for(data, tokenizer), root)),
        ("max_frames", lambda: cache(model, loader_for(data, tokenizer, max_frames=5), root)),
        ("a file touched", lambda: touch_one(data) or cache(model, loader_for(data, tokenizer),
                                                            root)),
        ("a row added", lambda: add_row(data) or cache(model, loader_for(data, tokenizer),
                                                       root)),
    ]:
        _, info = make()
        assert not info["reused"] and info["key"] not in keys, what
        keys.add(info["key"])
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(keys)


def touch_one(data):
    path = next((data / "features" / "train").iterdir())
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def add_row(data):
    manifest = data / "manifests" / "train.tsv"
    lines = manifest.read_text().splitlines()
    sample_id = lines[1].split("\t")[0]
    source = next((data / "features" / "train").glob(f"{sample_id}.*"))
    shutil.copy(source, source.with_name("added_row" + source.suffix))
    manifest.write_text("\n".join(lines + ["added_row" + lines[1][len(sample_id):]]) + "\n")


def test_a_full_disk_keeps_nothing(tiny_model, tiny_data, tmp_path, monkeypatch):
    model, tokenizer = tiny_model
    root = tmp_path / "cache"
    real_open = open

    class FullDisk:
        def __init__(self, *args, **kwargs):
            self.file = real_open(*args, **kwargs)

        def write(self, data):
            if self.file.tell() > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.file.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def __getattr__(self, name):
            return getattr(self.file, name)

    monkeypatch.setattr(cache_build, "open", FullDisk, raising=False)
    with pytest.raises(UserError, match="No space left on device.*nothing was kept"):
        cache(model, loader_for(tiny_data, tokenizer), root)
    monkeypatch.undo()
    monkeypatch.setattr(cache_build.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    loader = loader_for(tiny_data, tokenizer)
    needed = sum(loader.dataset.lengths) * model.encoder.token_dim * 2  # float16 token states
    with pytest.raises(UserError, match=f"needs {needed / 1e6:.1f} MB and the disk has 0.0 MB"):
        cache(model, loader, root)
    assert [p.name for p in root.iterdir() if p.is_dir()] == []  # no entry, no half build


@pytest.mark.slow
def test_killed_build_is_not_a_cache_and_the_next_run_rebuilds(tiny_data, sonar_checkpoint,
                                                               tmp_path):
    root = tmp_path / "cache"
    argv = train_argv(tiny_data, tmp_path / "run", "--sonar_checkpoint", sonar_checkpoint,
                      "--freeze_encoder", "--epochs", "1", "--encoder_cache_dir", root)
    die_midway = (  # SIGKILL once 40 of the 96 samples are encoded
        "import os, signal, sonar_t5.data.encoder_cache.build as c\n"
        "encode = c.encode_all\n"
        "def dying(*a, **k):\n"
        "    for n, item in enumerate(encode(*a, **k)):\n"
        "        if n == 40: os.kill(os.getpid(), signal.SIGKILL)\n"
        "        yield item\n"
        "c.encode_all = dying\n")
    killed = run_patched(die_midway, argv)
    assert killed.returncode == -9
    left = [p.name for p in root.iterdir() if p.is_dir()]
    assert len(left) == 1 and left[0].startswith(".building-"), left
    listing = run_script("-m", "sonar_t5.data.encoder_cache", "list", "--encoder_cache_dir", root,
                         check=True).stdout
    assert "unfinished build" in listing

    rerun = run_patched("", argv)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.stdout.count("encoder cache: built") == 2  # train and val, from scratch
    entries = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert len(entries) == 2 and not any(e.startswith(".") for e in entries)

    listing = run_script("-m", "sonar_t5.data.encoder_cache", "list", "--encoder_cache_dir", root,
                         check=True).stdout
    assert "2 caches" in listing and "96 samples" in listing and "24 samples" in listing
    assert str(tmp_path / "run") in listing  # which run used it
    cleared = run_script("-m", "sonar_t5.data.encoder_cache", "clear", entries[0],
                         "--encoder_cache_dir", root, check=True).stdout
    assert f"removed {entries[0]}" in cleared
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == entries[1:]
    run_script("-m", "sonar_t5.data.encoder_cache", "clear", "--all", "--encoder_cache_dir", root,
               check=True)
    assert [p for p in root.iterdir() if p.is_dir()] == []


def test_an_unwritable_cache_directory_is_one_line(tiny_data, sonar_checkpoint, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = train(tiny_data, tmp_path / "run", "--sonar_checkpoint", sonar_checkpoint,
                   "--freeze_encoder", "--epochs", "1", "--encoder_cache_dir",
                   blocker / "cache", check=False)
    assert_user_error(result, "cannot write the encoder cache directory", str(blocker / "cache"),
                      "--encoder_cache_dir")
    assert not (tmp_path / "run" / "config.json").exists()


def test_second_run_reuses_the_cache_with_the_same_losses_and_validation_can_too(
        tiny_data, sonar_checkpoint, tmp_path):
    root = tmp_path / "cache"
    common = ["--sonar_checkpoint", sonar_checkpoint, "--freeze_encoder", "--epochs", "1",
              "--resampler_input", "tokens", "--encoder_cache_dir", root]
    first = train(tiny_data, tmp_path / "first", *common)
    second = train(tiny_data, tmp_path / "second", *common)
    assert first.stdout.count("encoder cache: built") == 2
    assert second.stdout.count("encoder cache: reusing") == 2
    assert "encoder cache: built" not in second.stdout
    runs = [json.loads((tmp_path / r / f).read_text())
            for r in ("first", "second") for f in ("training_history.json", "config.json")]
    timings = ("epoch_time_s", "samples_per_s", "mfu")
    assert ([{k: v for k, v in r.items() if k not in timings} for r in runs[0]]
            == [{k: v for k, v in r.items() if k not in timings} for r in runs[2]])  # exactly
    assert [c["reused"] for c in runs[3]["encoder_cache"].values()] == [True, True]
    assert runs[1]["encoder_cache"]["val"]["key"] == runs[3]["encoder_cache"]["val"]["key"]

    # Validation of the frozen run reads the run's validation-set cache.
    bleu = {}
    for flags in ([], ["--use_encoder_cache", "--encoder_cache_dir", root]):
        out = tmp_path / f"validation{len(flags)}"
        run_script("validate_perceiver_model.py", "--checkpoint",
                   tmp_path / "first" / "best_model.pt", "--features",
                   tiny_data / "features" / "val", "--manifest",
                   tiny_data / "manifests" / "val.tsv",
                   "--output", out, "--device", "cpu", *flags, check=True)
        summary = json.loads((out / "validation_summary.json").read_text())
        bleu[bool(flags)] = summary["bleu"], summary["val_loss"]
    assert summary["encoder_cache"]["reused"]
    assert summary["encoder_cache"]["key"] == runs[1]["encoder_cache"]["val"]["key"]
    assert bleu[True][0] == bleu[False][0]
    assert bleu[True][1] == pytest.approx(bleu[False][1], rel=1e-3)
