"""sonar_t5/data/: every manifest layout, feature formats, sampler, demo data, and bad input."""
import hashlib
import shutil
import sys

import numpy as np
import pytest
import torch

from sonar_t5.data.dataset import FeatureDataset, LengthGroupedBatchSampler, padding_waste
from sonar_t5.data.features import load_features, subsample
from sonar_t5.data.manifest import read_manifest
from sonar_t5.data.synthetic import make_demo_data

from .conftest import TINY_MODEL, assert_user_error, data_args, run_script

H2S_HEADER = ("VIDEO_ID\tVIDEO_NAME\tSENTENCE_ID\tSENTENCE_NAME\tSTART_REALIGNED\t"
              "END_REALIGNED\tSENTENCE")
H2S_TEXTS = ['And I call them "bubbles".', "It's café time — don't worry.",
             "'Quoted' at the start"]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_how2sign_realigned_file_as_shipped(tmp_path):
    rows = [f"vid{i}\tvid{i}-5\t{i}\tvid{i}_{i}-5-rgb_front\t1.5\t3.2\t{t}"
            for i, t in enumerate(H2S_TEXTS)]
    manifest = write(tmp_path / "how2sign_realigned_val.csv", "\n".join([H2S_HEADER, *rows]) + "\n")
    parsed = read_manifest(manifest)
    assert [r.id for r in parsed] == [f"vid{i}_{i}-5-rgb_front" for i in range(3)]
    assert [r.text for r in parsed] == H2S_TEXTS  # quotes and non-ASCII byte for byte
    features = tmp_path / "features"
    features.mkdir()
    for r in parsed[:2]:  # the third sample's features are missing
        np.save(features / f"{r.id}.npy", np.ones((4, 8), np.float32))
    with pytest.warns(UserWarning, match="skipping 1 rows"):
        ds = FeatureDataset(manifest, features, skip_missing=True)
    assert len(ds) == 2 and ds[1]["text"] == H2S_TEXTS[1]


@pytest.mark.parametrize("content, expected_lengths", [
    ("id\ttext\tn_frames\na\thello there\t5\nb\t\"quoted\" text\t7\n", [5, 7]),
    ("id\tn_frames\ttgt_text\na\t5\thello there\nb\t7\t\"quoted\" text\n", [5, 7]),
    ("name\tcaption\textra\na\thello there\tx\nb\t\"quoted\" text\ty\n", [None, None]),
    ("a\t5\thello there\nb\t7\t\"quoted\" text\n", [5, 7]),
    ("a\thello there\nb\t\"quoted\" text\n", [None, None]),
])
def test_manifest_layouts(tmp_path, content, expected_lengths):
    rows = read_manifest(write(tmp_path / "m.tsv", content))
    assert [r.id for r in rows] == ["a", "b"]
    assert [r.text for r in rows] == ["hello there", '"quoted" text']
    assert [r.length for r in rows] == expected_lengths


def test_feature_formats_and_layouts(tmp_path):
    x = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float16)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", feats=x)
    (tmp_path / "c0000").mkdir()
    torch.save(torch.from_numpy(x), tmp_path / "c0000" / "c00001.pt")  # ssvp_slt layout
    np.save(tmp_path / "d.npy", x[0])  # one pre-pooled (D,) embedding
    write(tmp_path / "m.tsv", "id\ttext\na\tone\nb\ttwo\nc00001\tthree\nd\tfour\n")
    ds = FeatureDataset(tmp_path / "m.tsv", tmp_path)
    for i in range(3):
        item = ds[i]
        assert item["inputs"].dtype == torch.float32
        torch.testing.assert_close(item["inputs"], torch.from_numpy(x).float())
    assert ds[3]["inputs"].shape == (1, 8)
    assert ds.lengths == [6, 6, 6, 1]


def test_max_frames_subsamples_uniformly():
    x = torch.arange(10.0).unsqueeze(1)
    assert subsample(x, 4).squeeze(1).tolist() == [0.0, 3.0, 6.0, 9.0]
    assert subsample(x, 0) is x


def test_sampler_is_deterministic_covers_all_and_splits_across_processes():
    lengths = list(np.random.default_rng(0).integers(100, 500, size=1000))
    s = LengthGroupedBatchSampler(lengths, 16, seed=3, mega_batch_mult=8)
    s.set_epoch(1)
    first = list(s)
    s2 = LengthGroupedBatchSampler(lengths, 16, seed=3, mega_batch_mult=8)
    s2.set_epoch(1)
    assert list(s2) == first
    assert sorted(i for b in first for i in b) == list(range(1000))
    s.set_epoch(2)
    assert list(s) != first
    assert padding_waste(lengths, first) < 0.10
    random_batches = [list(range(i, min(i + 16, 1000))) for i in range(0, 1000, 16)]
    assert padding_waste(lengths, random_batches) > 0.2
    ranks = [LengthGroupedBatchSampler(lengths, 16, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    parts = [list(r) for r in ranks]
    assert len(parts[0]) == len(parts[1]) == len(ranks[0])
    assert set(i for p in parts for b in p for i in b) == set(range(1000))
    # Evaluation: no padding duplicates, so every sample is scored exactly once.
    ranks = [LengthGroupedBatchSampler(lengths[:70], 16, shuffle=False, num_replicas=2, rank=r)
             for r in (0, 1)]
    parts = [list(r) for r in ranks]
    assert [len(p) for p in parts] == [len(r) for r in ranks] == [3, 2]
    assert sorted(i for p in parts for b in p for i in b) == list(range(70))


def digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_demo_data_is_deterministic(tmp_path):
    a = make_demo_data(tmp_path / "a", 20, 5, 5, feature_dim=8, seed=0)
    b = make_demo_data(tmp_path / "b", 20, 5, 5, feature_dim=8, seed=0)
    c = make_demo_data(tmp_path / "c", 20, 5, 5, feature_dim=8, seed=1)
    assert digest(a) == digest(b) != digest(c)
    rows = read_manifest(a / "manifests" / "train.tsv")
    assert len(rows) == 20 and all(r.length == load_features(
        a / "features" / "train" / f"{r.id}.npy").shape[0] for r in rows)


# -- bad input, passed to the training script as a user would -------------------------------
EARLIER_RUN = ("best_model.pt", "last_model.pt", "config.json")


def bad_run(tmp_path, tiny_data, mutate):
    """Copy the tiny data's val split as the training split, break it, and train on it."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data / "features" / "val", data / "features" / "train")
    (data / "manifests").mkdir(parents=True)
    manifest = data / "manifests" / "train.tsv"
    shutil.copy(tiny_data / "manifests" / "val.tsv", manifest)
    shutil.copytree(tiny_data / "features" / "val", data / "features" / "val")
    shutil.copy(tiny_data / "manifests" / "val.tsv", data / "manifests" / "val.tsv")
    detail = mutate(manifest, data / "features" / "train")
    out = tmp_path / "out"
    out.mkdir()
    for name in EARLIER_RUN:
        (out / name).write_text("an earlier run's")
    result = run_script("train_sonar_with_t5.py", *data_args(data), *TINY_MODEL, "--epochs", "1",
                        "--output_dir", out, "--overwrite")
    return result, detail, out


def _lines(manifest):
    return manifest.read_text(encoding="utf-8").splitlines()


def _set_lines(manifest, lines):
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")


def missing_files(manifest, features):
    (features / "val_00003.npy").unlink()
    (features / "val_00007.npy").unlink()
    return ["2 of 24 feature files are missing", "val_00003, val_00007", "--skip_missing"]


def empty_text(manifest, features):
    lines = _lines(manifest)
    lines[4] = lines[4].rsplit("\t", 1)[0] + "\t "
    _set_lines(manifest, lines)
    return ["'val_00003' has empty text", "train.tsv:5"]


def duplicate_id(manifest, features):
    lines = _lines(manifest)
    lines[6] = "val_00001" + lines[6][len("val_00005"):]
    _set_lines(manifest, lines)
    return ["duplicate id 'val_00001' (first on line 3)", "train.tsv:7"]


def wrong_field_count(manifest, features):
    lines = _lines(manifest)
    lines[9] += "\textra"
    _set_lines(manifest, lines)
    return ["line has 4 tab-separated fields, expected 3", "train.tsv:10"]


def header_without_text(manifest, features):
    lines = _lines(manifest)
    lines[0] = "id\tn_frames\twords"
    _set_lines(manifest, lines)
    return ["no a text column (columns: id, n_frames, words)"]


def corrupt_file(manifest, features):
    (features / "val_00002.npy").write_bytes(b"\x93NUMPY garbage")
    return ["cannot read feature file", "val_00002.npy"]


def wrong_dimension(manifest, features):
    np.save(features / "val_00004.npy", np.zeros((9, 5), np.float16))
    return ["feature dimension 5, expected 16", "val_00004.npy"]


def nan_values(manifest, features):
    x = np.load(features / "val_00006.npy")
    x[1, 2] = np.nan
    np.save(features / "val_00006.npy", x)
    return ["NaN or Inf", "val_00006.npy"]


def manifest_missing(manifest, features):
    manifest.unlink()
    return ["manifest not found", "train.tsv"]


def manifest_empty(manifest, features):
    manifest.write_text("")
    return ["manifest is empty", "train.tsv"]


def manifest_not_utf8(manifest, features):
    manifest.write_bytes(manifest.read_bytes().replace(b"the", b"th\xe9", 1))
    return ["manifest is not UTF-8", "train.tsv"]


def features_dir_missing(manifest, features):
    shutil.rmtree(features)
    return ["features directory not found", "features/train"]


def zero_frames(manifest, features):
    np.save(features / "val_00005.npy", np.zeros((0, 16), np.float16))
    return ["zero frames", "val_00005.npy"]


@pytest.mark.parametrize("mutate", [missing_files, empty_text, duplicate_id, wrong_field_count,
                                    header_without_text, corrupt_file, wrong_dimension,
                                    nan_values, manifest_missing, manifest_empty,
                                    manifest_not_utf8, features_dir_missing, zero_frames],
                         ids=lambda f: f.__name__)
def test_bad_input_is_one_line_error(tmp_path, tiny_data, mutate):
    result, fragments, out = bad_run(tmp_path, tiny_data, mutate)
    assert_user_error(result, *fragments)
    # Found up front, or met while training before the new run's first checkpoint: the
    # earlier run that --overwrite would replace is back, and nothing of the new one is left.
    assert (out / "best_model.pt").read_text() == "an earlier run's"
    assert sorted(p.name for p in out.iterdir()) == sorted(EARLIER_RUN)
    assert all((out / name).read_text() == "an earlier run's" for name in EARLIER_RUN)


def test_errors_met_in_dataloader_workers_are_one_line(tmp_path, tiny_data):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "features" / "train" / "train_00002.npy").write_bytes(b"\x93NUMPY garbage")
    result = run_script("train_sonar_with_t5.py", *data_args(data), *TINY_MODEL, "--epochs", "1",
                        "--num_workers", "2", "--output_dir", tmp_path / "out")
    assert_user_error(result, "cannot read feature file", "train_00002.npy")


def test_ssvp_slt_feature_layout_and_manifest(tmp_path):
    """features/<n>/<id[:5]>/<id>.pt and a headerless video_name<TAB>length<TAB>label manifest
    whose names may carry the video's extension."""
    features = tmp_path / "features" / "0"
    for name, frames in (("-fZc293MpJk_0-1-rgb_front", 7), ("g0Abc_12-8-rgb_front", 3)):
        (features / name[:5]).mkdir(parents=True)
        torch.save(torch.randn(frames, 8), features / name[:5] / f"{name}.pt")
    manifest = write(tmp_path / "train_features.tsv",
                     "-fZc293MpJk_0-1-rgb_front.mp4\t7\tHello there.\n"
                     "g0Abc_12-8-rgb_front\t3\tand \"quoted\" text\n")
    ds = FeatureDataset(manifest, features)
    assert [ds[i]["inputs"].shape for i in range(2)] == [(7, 8), (3, 8)]
    assert ds.lengths == [7, 3] and ds.texts == ["Hello there.", 'and "quoted" text']


def test_a_workers_thread_cut_off_by_the_main_process_stopping_prints_nothing(capsys):
    from sonar_t5.data.loader import quiet_when_the_main_process_left

    def report(error):  # as multiprocessing's resource sharer reports: sys.excepthook(*exc_info)
        try:
            raise error
        except Exception:  # noqa: BLE001
            quiet_when_the_main_process_left(*sys.exc_info())

    report(ConnectionResetError(104, "Connection reset by peer"))
    assert capsys.readouterr().err == ""
    report(ValueError("a real error"))
    assert "ValueError: a real error" in capsys.readouterr().err
