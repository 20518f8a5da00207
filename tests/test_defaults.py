"""The defaults that depend on the decoder: the original guide's for a pretrained T5 (its three
commands resolve exactly as before), the recipe's for a decoder trained from scratch, the
vocabulary and warm-up chosen from the data, and every run saying what it chose."""
import json
import re

import pytest

import test_perceiver_architecture as smoke_test
from sonar_t5.common.cli import with_current_flag_names
from sonar_t5.training.args import parse_args
from sonar_t5.training.defaults import (MAX_VOCAB, MIN_VOCAB, choose_vocab_size,
                                        choose_warmup_steps, decoder_defaults)

from .conftest import ROOT, TINY_MODEL, data_args, run_script

# The guide's three commands (README), paths as there; what they resolved to before the
# defaults depended on the decoder, dumped from the parser of commit 5347caa.
GUIDE_DATA = ["--sonar_checkpoint", "checkpoints/sonar_encoder.pt",
              "--train_features", "features/train", "--train_manifest", "manifests/train.tsv",
              "--val_features", "features/val", "--val_manifest", "manifests/val.tsv"]
GUIDE = {
    "quick_test": ["--output_dir", "runs/quick_test", "--epochs", "2", "--batch_size", "8"],
    "frozen": ["--freeze_encoder", "--output_dir", "runs/frozen", "--epochs", "30",
               "--batch_size", "16", "--learning_rate", "1e-4"],
    "unfrozen": ["--output_dir", "runs/unfrozen", "--epochs", "30", "--batch_size", "16",
                 "--learning_rate", "1e-4", "--encoder_lr_scale", "0.2"],
}


@pytest.mark.parametrize("name", list(GUIDE))
def test_the_guides_three_commands_resolve_every_flag_as_before(name, monkeypatch):
    monkeypatch.setenv("SONAR_T5_CACHE_DIR", "/cache")  # as when the snapshot was taken
    # the snapshot's flags by their current names (--encoder_dim is now --encoder_d_model)
    before = with_current_flag_names(
        json.loads((ROOT / "tests" / "guide_flags_before.json").read_text())[name])
    now = vars(parse_args(GUIDE_DATA + GUIDE[name]))
    assert {flag: now[flag] for flag in before} == before
    assert now["defaults"]["from_scratch"] is False


def test_a_plain_command_with_a_decoder_from_scratch_gets_the_recipe_and_set_flags_win():
    args = parse_args([*map(str, data_args(ROOT)), "--output_dir", "x",
                       "--t5_model", "scratch-t5-small", "--learning_rate", "5e-4",
                       "--num_latents", "8"])
    assert (args.learning_rate, args.num_latents) == (5e-4, 8)  # set: kept
    assert (args.batch_size, args.hidden_dim, args.num_heads) == (32, 512, 8)
    assert (args.encoder_d_model, args.encoder_layers) == (512, 1)
    assert args.vocab_size is None and args.warmup_steps is None  # from the data, later
    assert args.defaults == {"t5_model": "scratch-t5-small", "from_scratch": True, "chosen": {
        "warmup_steps": None, "batch_size": 32, "hidden_dim": 512, "num_heads": 8,
        "encoder_d_model": 512, "encoder_layers": 1, "vocab_size": None}}
    tiny = decoder_defaults("t5-tiny")  # the realistic benchmark's recipe
    assert {k: tiny[k] for k in ("learning_rate", "batch_size", "hidden_dim", "num_latents",
                                 "num_heads", "encoder_d_model")} == dict(
        learning_rate=1e-3, batch_size=32, hidden_dim=128, num_latents=16, num_heads=4,
        encoder_d_model=128)


def words(n, distinct_characters="abcdefghij"):
    return [" ".join(distinct_characters[i % len(distinct_characters)] for i in range(n))]


@pytest.mark.parametrize("texts, size", [
    (words(44_836), 1000),  # the realistic benchmark's 6,400 training sentences
    (words(29_481), 700),   # the demo's 3,000 (its text supports 296 pieces: it gets those)
    (words(905), MIN_VOCAB),  # the tests' tiny data
    (words(10_000_000), MAX_VOCAB),
    (words(20_000, "".join(map(chr, range(0x4e00, 0x4e00 + 300)))), 602),  # 300 + the space
])
def test_the_vocabulary_rule(texts, size):
    args = parse_args([*map(str, data_args(ROOT)), "--output_dir", "x", "--t5_model", "t5-tiny"])
    assert choose_vocab_size(args, texts) == size
    assert args.defaults["chosen"]["vocab_size"] == size


@pytest.mark.parametrize("flags, steps_per_epoch, warmup", [
    ([], 200, 200),                          # 30 epochs: one epoch is 3% of the plan
    (["--epochs", "3"], 200, 30),            # 5% of a 3-epoch plan
    (["--epochs", "3", "--time_budget", "15"], 200, 200),  # planned later: the first epoch
    (["--warmup_steps", "7"], 200, 7),
])
def test_the_warm_up_rule(flags, steps_per_epoch, warmup):
    args = parse_args([*map(str, data_args(ROOT)), "--output_dir", "x", "--t5_model", "t5-tiny",
                       *flags])
    assert choose_warmup_steps(args, steps_per_epoch) == warmup


def without(flags, *names):
    out = list(flags)
    for name in names:
        i = out.index(name)
        del out[i:i + 2]
    return out


def test_a_run_says_which_defaults_it_chose_and_resume_keeps_them(tiny_data, tmp_path):
    out = tmp_path / "run"
    model = without(TINY_MODEL, "--learning_rate", "--warmup_steps", "--batch_size")
    argv = [*data_args(tiny_data), *model, "--output_dir", out, "--epochs", "1"]
    result = run_script("train_sonar_with_t5.py", *argv, check=True)
    # 96 samples in batches of 32: 3 steps an epoch, 5% of 1 epoch's 3 steps rounds to 0 -> 1
    line = ("defaults for t5-tiny, a decoder trained from scratch: --learning_rate 0.001 "
            "--warmup_steps 1 --batch_size 32 --vocab_size 200 (what learned on real text "
            "within a CPU budget; flags you set win)")
    assert line in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["defaults"]["chosen"] == {"learning_rate": 1e-3, "warmup_steps": 1,
                                                    "batch_size": 32, "vocab_size": 200}
    assert config["args"]["vocab_size"] == 200 and config["args"]["warmup_steps"] == 1
    # --resume with the same unset flags: the run's own values (here the same), not refused
    argv[argv.index("--epochs") + 1] = "2"
    resumed = run_script("train_sonar_with_t5.py", *argv, "--resume", check=True)
    assert line in resumed.stdout
    assert [r["epoch"] for r in json.loads((out / "training_history.json").read_text())] == [1, 2]


def test_the_smoke_test_and_the_flag_table_say_what_training_chooses():
    table = (ROOT / "docs" / "training.md").read_text()
    rows = dict(re.findall(r"^\| `--(\w+)` \| ([^|]+\|[^|]+\|[^|]+)\|", table, re.M))
    for column, t5_model in enumerate(["t5-small", "t5-tiny", "scratch-t5-small"]):
        training = vars(parse_args([*map(str, data_args(ROOT)), "--output_dir", "x",
                                    "--t5_model", t5_model]))
        smoke = vars(smoke_test.parse_args(["--t5_model", t5_model]))
        for flag in ("hidden_dim", "num_latents", "num_heads"):
            assert smoke[flag] == training[flag], (t5_model, flag)
            if t5_model == "t5-small":  # no --t5_model: the guide's t5-small, as its shape
                guide = vars(smoke_test.parse_args([]))
                assert (guide[flag], guide["t5_model"]) == (training[flag], "scratch-t5-small")
        for flag, value in decoder_defaults(t5_model).items():
            if flag == "vocab_size" and t5_model == "t5-small":
                continue  # a pretrained T5 brings its own
            cell = rows[flag].split("|")[column].strip()
            assert cell == (f"{value:g}" if isinstance(value, float) else str(value)) \
                or value is None, (t5_model, flag, cell)
