"""Reliability by family, the third round of a hostile tester's cases: never delete what the
toolkit did not write; never train on damaged data; a stop signal to the whole job (workers,
process group, torchrun); full disks; untrusted files; failing before the work; small ones;
the trackers run for real."""
import json
import os
import shutil
import signal
import struct
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from sonar_t5.common.config_file import read_config_file
from sonar_t5.common.errors import UserError
from sonar_t5.data.dataset import Collator, FeatureDataset, make_loader
from sonar_t5.data.encoder_cache import cached_loaders
from sonar_t5.evaluation.export import export
from sonar_t5.models.checkpoint import load_checkpoint, load_model

from .conftest import ENV, ROOT, assert_user_error, run_patched, run_script, train, train_argv
from .processes import DDP_WATCH, descendants, patched_script, run_python, start_python


def tree(path):
    """{relative path: bytes} of every file under path: what 'byte-identical' compares."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(Path(path).rglob("*"))
            if p.is_file()}


def history(out):
    return json.loads((Path(out) / "training_history.json").read_text())


def log_lines(out):
    return [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]


def wait_for(predicate, proc, timeout=300):
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended early ({proc.returncode}): "
                                 f"{proc.stderr.read()[-2000:]}")
        assert time.time() - start < timeout, "timed out"
        time.sleep(0.05)


# -- 1. never delete what the toolkit did not write -----------------------------------------
@pytest.mark.slow
def test_a_users_own_logs_in_the_output_directory_are_never_removed(tiny_data, tmp_path):
    out = tmp_path / "run"
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events.out.tfevents.mine").write_bytes(b"my own curves")
    (out / "train_log.jsonl").write_text('{"step": 1, "loss": 3.0}\n')
    before = tree(out)
    assert_user_error(train(tiny_data, out, "--epochs", 1, check=False),
                      "output directory is not empty (holds tensorboard, train_log.jsonl)")
    assert tree(out) == before
    assert_user_error(train(tiny_data, out, "--epochs", 1, "--resume", check=False),
                      "nothing to resume")
    assert tree(out) == before

    # What a killed start of this toolkit left (its .run_logs marker names them) does go.
    killed = tmp_path / "killed"
    proc = start_python("train_sonar_with_t5.py",
                        *train_argv(tiny_data, killed, "--epochs", 1, "--batch_size", 2,
                                    "--log_every", 1),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (killed / "train_log.jsonl").is_file(), proc)
    proc.kill()
    proc.wait()
    assert not (killed / "last_model.pt").exists() and (killed / ".run_logs").is_file()
    again = train(tiny_data, killed, "--epochs", 1)
    assert f"note: removed train_log.jsonl in {killed}" in again.stdout


def tiny_cache(tiny_model, data, root):
    """A real frozen-encoder cache of the tiny training set in root. -> its served loader."""
    model, tokenizer = tiny_model
    dataset = FeatureDataset(data / "manifests" / "train.tsv", data / "features" / "train")
    loader = make_loader(dataset, Collator(tokenizer), 16, shuffle=False)
    (served,), infos = cached_loaders(model, {"train": loader}, root, torch.device("cpu"),
                                      "fp32", show=False)
    return served, Path(infos["train"]["path"])


def test_cache_clear_removes_only_caches_it_made(tiny_model, tiny_data, tmp_path):
    root = tmp_path / "caches"
    _, entry = tiny_cache(tiny_model, tiny_data, root)
    (root / "my_results").mkdir()
    (root / "my_results" / "table.csv").write_text("bleu\n12.3\n")
    (root / "notes.txt").write_text("mine")
    lookalike = root / ("0123456789abcdef" * 2)[:24]  # a key-like name, but not made here
    lookalike.mkdir()
    (lookalike / "data.bin").write_bytes(b"\x00" * 10)
    foreign = {p: tree(p) if p.is_dir() else p.read_bytes()
               for p in (root / "my_results", root / "notes.txt", lookalike)}
    cli = ["-m", "sonar_t5.data.encoder_cache"]
    listed = run_script(*cli, "list", "--encoder_cache_dir", root, check=True).stdout
    assert f"{root}: 1 cache," in listed and entry.name in listed
    assert "also here, not caches (never cleared): " in listed
    assert_user_error(run_script(*cli, "clear", "my_results", "--encoder_cache_dir", root),
                      "my_results is not a cache this toolkit made", "nothing was removed")
    cleared = run_script(*cli, "clear", "--all", "--encoder_cache_dir", root, check=True).stdout
    assert f"removed {entry.name}" in cleared and not entry.exists()
    assert "left alone, not caches this toolkit made: " in cleared
    for path, content in foreign.items():
        assert (tree(path) if path.is_dir() else path.read_bytes()) == content


# -- 2. never train silently on damaged data ------------------------------------------------
def test_a_damaged_cache_is_refused_in_one_line(tiny_model, tiny_data, tmp_path):
    root = tmp_path / "caches"
    served, entry = tiny_cache(tiny_model, tiny_data, root)
    states = entry / "states.bin"
    good = states.read_bytes()
    states.write_bytes(np.random.default_rng(0).bytes(len(good)))  # same size, random bytes
    with pytest.raises(UserError, match=f"damaged encoder cache: the states of sample "
                                        f"{served.dataset.rows[0].id} do not match the checksum"):
        tiny_cache(tiny_model, tiny_data, root)[0].dataset[0]
    states.write_bytes(good)
    meta = json.loads((entry / "meta.json").read_text())
    for edit, message in ((dict(dtype="float32"), "meta.json says dtype 'float32', this cache "
                                                  "must hold 'float16'"),
                          (dict(dim=None), "meta.json's 'dim' is None"),
                          ({"rows": meta["rows"] + 1}, "states.bin holds")):
        (entry / "meta.json").write_text(json.dumps({**meta, **edit}))
        with pytest.raises(UserError, match=message):
            tiny_cache(tiny_model, tiny_data, root)
    (entry / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "dim"}))
    with pytest.raises(UserError, match="meta.json has no 'dim'"):
        tiny_cache(tiny_model, tiny_data, root)


def test_training_on_a_cache_overwritten_with_random_bytes_stops(tiny_data, sonar_checkpoint,
                                                                tmp_path):
    cache = tmp_path / "cache"
    frozen = ("--sonar_checkpoint", sonar_checkpoint, "--freeze_encoder",
              "--encoder_cache_dir", cache, "--epochs", 1)
    train(tiny_data, tmp_path / "first", *frozen)
    for states in cache.glob("*/states.bin"):
        states.write_bytes(np.random.default_rng(1).bytes(states.stat().st_size))
    result = train(tiny_data, tmp_path / "second", *frozen, check=False)
    assert_user_error(result, "damaged encoder cache: the states of sample",
                      "python -m sonar_t5.data.encoder_cache clear")
    assert not (tmp_path / "second").exists()


NAN_LOSS = """
from sonar_t5.models.sonar_t5 import SonarT5
_forward, _calls, bad = SonarT5.forward, [], {BAD}
def forward(self, *a, **k):
    _calls.append(1)
    loss = _forward(self, *a, **k)
    return loss * float("nan") if bad(len(_calls)) else loss
SonarT5.forward = forward
"""


@pytest.mark.slow
def test_an_epoch_that_takes_no_step_stops_the_run(tiny_data, tmp_path):
    some = run_patched(NAN_LOSS.replace("{BAD}", "lambda n: n in (2, 3)"),
                       train_argv(tiny_data, tmp_path / "some", "--epochs", 1))
    assert some.returncode == 0, some.stderr[-2000:]
    assert "warning: 2 of 6 optimizer steps of this epoch were skipped" in some.stdout
    every = run_patched(NAN_LOSS.replace("{BAD}", "lambda n: True"),
                        train_argv(tiny_data, tmp_path / "every", "--epochs", 2))
    assert every.returncode == 1 and "Traceback" not in every.stderr
    assert ("error: no optimizer step taken in epoch 1: all 6 steps had a non-finite loss or "
            "gradient") in every.stderr
    assert not (tmp_path / "every" / "best_model.pt").exists()


# -- 3. a stop signal sent to the whole job -------------------------------------------------
STOPPABLE = ("--epochs", 2, "--batch_size", 2, "--num_workers", 2, "--log_every", 4)
COMPARED = ("step", "train_loss", "val_loss", "val_bleu", "val_chrf", "cond_gap")


def stopped_by_the_group(command, out, every_process=False):
    """Start `python COMMAND` in a process group of its own; once the run is a few steps into
    epoch 1, send SIGTERM to the group (a terminal, `timeout`, `docker stop`), or with
    every_process to each process of the job at once, in whatever group (Slurm's scancel).
    -> (exit status, stdout, stderr)."""
    proc = start_python(*command, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        start_new_session=True)
    log = Path(out) / "train_log.jsonl"
    wait_for(lambda: log.is_file() and len(log.read_text().splitlines()) >= 2, proc)
    others = descendants(proc.pid) if every_process else []
    os.killpg(proc.pid, signal.SIGTERM)
    for pid in others:
        os.kill(pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=180)
    return proc.returncode, stdout, stderr


def same_run(a, b):
    assert [{k: r[k] for k in COMPARED} for r in history(a)] == \
        [{k: r[k] for k in COMPARED} for r in history(b)]
    assert [(r["step"], round(r["loss"], 6)) for r in log_lines(a)] == \
        [(r["step"], round(r["loss"], 6)) for r in log_lines(b)]


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_saves_and_resumes_identically(tiny_data,
                                                                                tmp_path):
    whole, out = tmp_path / "whole", tmp_path / "stopped"
    train(tiny_data, whole, *STOPPABLE)
    code, stdout, stderr = stopped_by_the_group(
        ["train_sonar_with_t5.py", *train_argv(tiny_data, out, *STOPPABLE)], out)
    assert code == 143, stderr[-3000:]
    assert "Traceback" not in stderr and "killed by signal" not in stderr
    assert "terminated (SIGTERM) in epoch 1 after" in stdout and "resume with: " in stdout
    train(tiny_data, out, *STOPPABLE, "--resume")
    same_run(out, whole)


def torchrun(*args):
    return ["-m", "torch.distributed.run", "--nproc_per_node", "2", *args]


@pytest.mark.slow
def test_sigterm_to_a_torchrun_job_stops_every_process_at_one_step(tiny_data, tmp_path):
    whole, out = tmp_path / "whole", tmp_path / "stopped"
    run_script(*torchrun("train_sonar_with_t5.py", *train_argv(tiny_data, whole, *STOPPABLE)),
               check=True)
    # torchrun, its two processes and their DataLoader workers each get SIGTERM
    code, stdout, stderr = stopped_by_the_group(
        torchrun("train_sonar_with_t5.py", *train_argv(tiny_data, out, *STOPPABLE)), out,
        every_process=True)
    assert code != 0  # torchrun reports the signal it received itself
    assert "terminated (SIGTERM) in epoch 1 after" in stdout, stderr[-3000:]
    assert "resume with: torchrun --nproc_per_node=2 train_sonar_with_t5.py" in stdout
    assert "killed by signal" not in stderr and "common.errors.Terminated" not in stderr
    run_script(*torchrun("train_sonar_with_t5.py",
                         *train_argv(tiny_data, out, *STOPPABLE, "--resume")), check=True)
    same_run(out, whole)


# A validation of batches of 1 s each, in epoch 2: each batch's start (pid, time) is a line of
# the marker file.
SLOW_VALIDATION = """
import os, time, sonar_t5.evaluation.generation as generation
_generate = generation.generate_texts
def generate_texts(*args, **kwargs):
    if os.path.exists({epoch_1!r}):
        with open({marker!r}, "a") as f:
            f.write(f"{{os.getpid()}} {{time.time()}}\\n")
        time.sleep(1.0)
    return _generate(*args, **kwargs)
generation.generate_texts = generate_texts
"""


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_a_stop_during_validation_saves_within_about_one_batch(processes, tiny_data, tmp_path):
    out, marker = tmp_path / "run", tmp_path / "validating"
    patch = SLOW_VALIDATION.format(epoch_1=str(out / "last_model.pt"), marker=str(marker))
    # 21 sentences, 21 batches: under torchrun one process has a batch more than the other
    val = tmp_path / "val.tsv"
    val.write_text("".join((tiny_data / "manifests" / "val.tsv").read_text()
                           .splitlines(keepends=True)[:22]))
    argv = ["train_sonar_with_t5.py", *train_argv(tiny_data, out, "--epochs", 3,
                                                  "--eval_batch_size", 1)]
    argv[argv.index("--val_manifest") + 1] = str(val)
    script = patched_script(tmp_path / "patched_train.py", patch + DDP_WATCH, argv[0], argv[1:])
    launch = (["-m", "torch.distributed.run", "--nproc_per_node", "2", script]
              if processes == 2 else [script])
    proc = start_python(*launch, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        start_new_session=True)
    wait_for(marker.is_file, proc)
    time.sleep(1.5)  # a batch or two into the validation
    sent = time.time()
    os.killpg(proc.pid, signal.SIGTERM)
    for pid in descendants(proc.pid):  # Slurm's scancel: every process of the job
        os.kill(pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    latency = time.time() - sent
    assert "terminated (SIGTERM) in epoch 2 after" in stdout, stderr[-3000:]
    # torchrun prints its own traceback for the signal it received; the processes print none
    assert "killed by signal" not in stderr and "common.errors.Terminated" not in stderr
    assert "Traceback" not in stderr or processes == 2
    assert "DDP wrapper alive" not in stderr
    # Each process finishes the batch it is in and stops: at most one more batch starts after
    # the signal (the other process's, in step with it), not the rest of the validation (9).
    starts = [line.split() for line in marker.read_text().splitlines()]
    after = [pid for pid, at in starts if float(at) > sent]
    assert len(after) <= processes, (len(after), len(starts))
    print(f"{processes} process(es): SIGTERM to exit {latency:.2f} s, {len(starts)} batches "
          f"started, {len(after)} after the signal")
    assert latency < 20, latency  # not torchrun's kill 30 s after a stop (a hang at exit)
    assert load_checkpoint(out / "last_model.pt")["epoch"] == 1
    run_script("train_sonar_with_t5.py", *argv[1:], "--resume", check=True)
    assert [r["epoch"] for r in history(out)] == [1, 2, 3]


# -- 4. a full disk -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_full_disk_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_data, out, "--epochs", 1)
    last = (out / "last_model.pt").read_bytes()
    # best_model.pt (weights) fits, last_model.pt (weights + optimizer state) does not
    limit = (len(last) + (out / "best_model.pt").stat().st_size) // 2
    result = run_python("train_sonar_with_t5.py",
                        *train_argv(tiny_data, out, "--epochs", 3, "--resume"),
                        file_size_limit=limit)
    assert_user_error(result, "could not write last_model.pt: File too large",
                      str(out / "last_model.pt"), "the previous file is unchanged")
    assert "epoch 3/3" not in result.stdout  # it stopped at the failed save
    assert (out / "last_model.pt").read_bytes() == last
    assert not list(out.glob(".*.tmp")) and [r["epoch"] for r in history(out)] == [1]

    result = run_python("train_sonar_with_t5.py",  # the lock's note fails
                        *train_argv(tiny_data, out, "--epochs", 3, "--resume"),
                        file_size_limit=10)
    assert_user_error(result, "cannot write the run's lock file (10 of ",
                      "bytes written: the disk is full)")
    assert (out / "last_model.pt").read_bytes() == last and not (out / ".lock").exists()


# -- 5. files a user is handed are untrusted input ------------------------------------------
def test_exported_folders_from_elsewhere_are_untrusted(tiny_run, tiny_data, tmp_path):
    good = export(tiny_run[0] / "best_model.pt", tmp_path / "good")
    load_model(good)

    def damaged(name, damage):
        folder = shutil.copytree(good, tmp_path / name)
        damage(folder)
        with pytest.raises(UserError) as caught:
            load_model(folder)
        return str(caught.value)

    def huge_header(folder):
        weights = folder / "model.safetensors"
        weights.write_bytes(struct.pack("<Q", 2**40) + weights.read_bytes()[8:])
    assert "cannot load the exported model (SafetensorError: Error while deserializing " \
           "header: header too large)" in damaged("huge", huge_header)
    assert "generation_config.json is not readable JSON (JSONDecodeError" in damaged(
        "generation", lambda f: (f / "generation_config.json").write_text("{not json"))
    assert "config.json holds a JSON list, not an object" in damaged(
        "config", lambda f: (f / "config.json").write_text("[1, 2]"))
    result = run_script("validate_perceiver_model.py", "--checkpoint", tmp_path / "config",
                        "--features", tiny_data / "features" / "val", "--manifest",
                        tiny_data / "manifests" / "val.tsv", "--output", tmp_path / "v")
    assert_user_error(result, "config.json holds a JSON list", "export the checkpoint again")

    def config(change):
        def damage(folder):
            value = json.loads((folder / "config.json").read_text())
            change(value["model_config"])
            (folder / "config.json").write_text(json.dumps(value))
        return damage

    def linked(name, target):
        def damage(folder):
            (folder / name).unlink()
            (folder / name).symlink_to(target)
        return damage

    for name, damage, fragment in [
            ("spiece", lambda f: (f / "spiece.model").write_bytes(os.urandom(2000)),
             "the SentencePiece tokenizer is corrupt"),
            ("weights_device", linked("model.safetensors", "/dev/zero"),
             "model.safetensors is not a regular file"),
            ("config_device", linked("config.json", "/dev/zero"),
             "config.json is not a regular file"),
            ("config_system", linked("config.json", "/etc/passwd"),
             "config.json is not readable JSON"),
            ("weights_system", linked("model.safetensors", "/etc/passwd"),
             "cannot load the exported model (SafetensorError"),
            ("wide_t5", config(lambda m: m["t5"].update(d_model=10**6, vocab_size=10**6)),
             "the model config declares a model of 3,7"),
            ("wide_bridge", config(lambda m: m.update(hidden_dim=m["hidden_dim"] * 100_000)),
             "GiB, more than this machine's memory"),
            ("deep", config(lambda m: m["t5"].update(num_layers=10**7, num_decoder_layers=10**7)),
             "declares 10,000,000 layers in one stack")]:
        assert fragment in damaged(name, damage), name

    def beams(folder):
        settings = json.loads((folder / "generation_config.json").read_text())
        (folder / "generation_config.json").write_text(json.dumps({**settings, "num_beams": -3}))
    assert "generation_config.json: num_beams must be at least 1 (got -3)" in damaged("beams",
                                                                                      beams)
    result = run_script("validate_perceiver_model.py", "--checkpoint", tmp_path / "beams",
                        "--features", tiny_data / "features" / "val", "--manifest",
                        tiny_data / "manifests" / "val.tsv", "--output", tmp_path / "v2")
    assert_user_error(result, "num_beams must be at least 1 (got -3)")


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")) + \
    "report_to: *i\n"


def test_config_files_that_are_not_utf8_or_are_alias_bombs(tmp_path):
    from sonar_t5.training.args import build_parser
    latin1, bomb = tmp_path / "latin1.yaml", tmp_path / "bomb.yaml"
    latin1.write_bytes(b"learning_rate: 1e-4\nseed: caf\xe9\n")
    bomb.write_text(ALIAS_BOMB)
    with pytest.raises(UserError, match=r"not UTF-8 text \(byte 0xe9\), .*latin1.yaml:2"):
        read_config_file(latin1, build_parser())
    start = time.time()
    with pytest.raises(UserError, match=r"YAML alias \*a .*bomb.yaml:2"):
        read_config_file(bomb, build_parser())
    assert time.time() - start < 5  # refused on sight: 9**9 items never built
    for endless in ("/dev/zero", "/dev/urandom"):  # no size to check: the read is bounded
        with pytest.raises(UserError, match=f"more than a config file's 1,000,000 bytes, "
                                            f"{endless}"):
            read_config_file(endless, build_parser())


# -- 6. fail before the work ----------------------------------------------------------------
def test_attention_plots_check_their_folder_first_and_name_long_ids(tiny_run, tiny_data,
                                                                   tmp_path):
    validate = ["validate_perceiver_model.py", "--checkpoint", tiny_run[0] / "best_model.pt",
                "--attention_plot", 1]
    out = tmp_path / "out"
    out.mkdir()
    (out / "attention").write_text("a file where the plots would go")
    result = run_script(*validate, "--features", tiny_data / "features" / "val",
                        "--manifest", tiny_data / "manifests" / "val.tsv", "--output", out)
    assert_user_error(result, "--output's attention/ is a file, not a directory")
    assert not (out / "validation_summary.json").exists()  # nothing was translated

    long_id = "x" * 300  # longer than a file name can be
    feature = sorted((tiny_data / "features" / "val").glob("*.npy"))[0]
    manifest = tmp_path / "long.tsv"
    manifest.write_text(f"id\ttext\tfeatures\n{long_id}\thello there\t{feature.name}\n")
    result = run_script(*validate, "--features", feature.parent, "--manifest", manifest,
                        "--output", tmp_path / "long", check=True)
    plots = list((tmp_path / "long" / "attention").glob("*.png"))
    assert len(plots) == 1 and plots[0].name.startswith("x" * 100)
    assert len(plots[0].name.encode()) <= 255 and "wrote 1 attention plots" in result.stdout


@contextmanager
def read_only(path):
    """Make the directory `path` read-only for real, root included: its files on a tmpfs
    remounted read-only (needs root's mount; skipped where that is not allowed)."""
    keep = path.with_name(path.name + ".keep")
    path.rename(keep)
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    if not mounted:
        path.rmdir()
        keep.rename(path)
        pytest.skip("mounting a read-only tmpfs needs root (mount -t tmpfs)")
    try:
        shutil.copytree(keep, path, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
        path.rmdir()
        keep.rename(path)


def test_read_only_places_are_found_before_the_work(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_data, out, "--epochs", 1, "--report_to", "tensorboard")
    with read_only(out / "tensorboard"):
        result = train(tiny_data, out, "--epochs", 2, "--resume", "--report_to", "tensorboard",
                       check=False)
        assert_user_error(result, "cannot resume: the run's files are read-only",
                          str(out / "tensorboard"))
        assert "resuming on" not in result.stdout
    with read_only(out / "results"):  # where the end of training writes its scores
        result = train(tiny_data, out, "--epochs", 1, "--resume", check=False)
        assert_user_error(result, "cannot resume: the run's files are read-only",
                          str(out / "results"))
    shutil.move(out / "results", tmp_path / "results_aside")
    (out / "results").write_text("a file where the scores go")
    result = train(tiny_data, out, "--epochs", 1, "--resume", check=False)
    assert_user_error(result, "cannot resume: results is a file", str(out / "results"),
                      "--skip_final_scoring")
    (out / "results").unlink()
    shutil.move(tmp_path / "results_aside", out / "results")
    before = tree(out)
    with read_only(out):
        plot = ["plot_training_curves.py", "--checkpoint_dir", out]
        assert_user_error(run_script(*plot), "--output's directory is not writable", str(out))
        run_script(*plot, "--output", tmp_path / "curves.png", check=True)
    assert tree(out) == before and (tmp_path / "curves.png").is_file()


def test_a_foreign_history_is_one_line(tmp_path):
    (tmp_path / "training_history.json").write_text(json.dumps(
        [{"epoch": 1, "train_loss": 2.0, "val_bleu": 3.0}]))  # no val_loss
    for flags in (["--checkpoint_dir", tmp_path], ["--table", tmp_path]):
        result = run_script("plot_training_curves.py", *flags, "--output", tmp_path / "x.png")
        assert_user_error(result, "training_history.json entry 1 has no field 'val_loss'")


# -- 7. small ones --------------------------------------------------------------------------
def test_an_empty_feature_file_is_one_line(tiny_data, tmp_path):
    data = shutil.copytree(tiny_data, tmp_path / "data")
    victim = sorted((data / "features" / "train").glob("*.npy"))[3]
    victim.write_bytes(b"")
    assert_user_error(train(data, tmp_path / "run", "--epochs", 1, check=False),
                      "cannot read feature file", str(victim))


def test_resume_after_a_half_written_log_line(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_data, out, "--epochs", 1, "--log_every", 2)
    with open(out / "train_log.jsonl", "a") as f:
        f.write('{"step": 7, "epo')  # what a kill in the middle of a write leaves
    resumed = train(tiny_data, out, "--epochs", 2, "--log_every", 2, "--resume")
    assert f"note: dropped 1 unreadable line of {out / 'train_log.jsonl'}" in resumed.stdout
    assert [r["step"] for r in log_lines(out)] == [2, 4, 6, 8, 10, 12]


CTRL_C_AT_STEP_13 = """
import os, signal, sonar_t5.training.engine as engine
step = engine.optimizer_step
def step_then_ctrl_c(optimization, state, *args):
    norm = step(optimization, state, *args)
    if state.global_step == 13:
        os.kill(os.getpid(), signal.SIGINT)
    return norm
engine.optimizer_step = step_then_ctrl_c
"""


@pytest.mark.slow
def test_the_first_log_line_after_a_mid_epoch_resume_averages_like_the_whole_run(tiny_data,
                                                                                 tmp_path):
    flags = ("--epochs", 1, "--batch_size", 2, "--log_every", 10)
    whole, out = tmp_path / "whole", tmp_path / "stopped"
    train(tiny_data, whole, *flags)
    stopped = run_patched(CTRL_C_AT_STEP_13, train_argv(tiny_data, out, *flags))
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert load_checkpoint(out / "last_model.pt")["state"]["global_step"] == 13
    train(tiny_data, out, *flags, "--resume")  # its first line, step 20, covers 11-20
    same_run(out, whole)


def test_the_smoke_tests_flags_have_ranges_and_code_carrying_checkpoints_are_named(tmp_path):
    result = run_script("test_perceiver_architecture.py", "--num_latents", 0)
    assert_user_error(result, "--num_latents must be at least 1 (got 0)")

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo never run",))
    path = tmp_path / "evil.pt"
    torch.save({"kind": "sonar_t5", "x": Payload()}, path)
    with pytest.raises(UserError, match=r"refused to load checkpoint: it holds Python objects "
                                        r"such as posix.system"):
        load_checkpoint(path)


# -- 8. the trackers we ship, run for real --------------------------------------------------
def wandb_history(run_dir):
    """The history records of an offline W&B run: its .wandb file is a LevelDB-style log
    (32 KiB blocks of records with a 7-byte header) of protobuf Records, after a 7-byte
    file header."""
    from wandb.proto.wandb_internal_pb2 import Record
    data = next(Path(run_dir).glob("run-*.wandb")).read_bytes()
    rows, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.mark.slow
def test_wandb_offline_for_real(tiny_data, tmp_path):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install wandb)")
    out, env = tmp_path / "run", {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    argv = train_argv(tiny_data, out, "--epochs", 2, "--report_to", "wandb")
    assert run_patched("", argv, env=env).returncode == 0
    run_id = (out / "wandb_run_id").read_text().strip()
    runs = list((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1
    rows = [r for r in wandb_history(runs[0]) if "val/bleu" in r]
    assert [r["val/bleu"] for r in rows] == [r["val_bleu"] for r in history(out)]
    # --resume continues the same W&B run id: a second offline directory, epoch 3 in it
    resumed = run_patched("", train_argv(tiny_data, out, "--epochs", 3, "--report_to", "wandb",
                                         "--resume"), env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    runs = sorted((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 2
    assert [r["epoch"] for r in wandb_history(runs[1]) if "val/bleu" in r] == [3]


def trackio_query(env, call):
    """Trackio's own reader on the database in env's TRACKIO_DIR (read when trackio is
    imported, so in a fresh interpreter): -> SQLiteStorage.<call>'s value."""
    code = ("import json; from trackio.sqlite_storage import SQLiteStorage as S; "
            f"print(json.dumps(S.{call}))")
    result = run_python("-c", code, env={**ENV, **env})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
def test_trackio_locally_for_real(tiny_data, tmp_path):
    pytest.importorskip("trackio", reason="trackio is not installed (pip install trackio)")
    env = {"TRACKIO_DIR": str(tmp_path / "trackio"), "TRACKIO_PROJECT": "test"}
    out = tmp_path / "a" / "run"
    assert run_patched("", train_argv(tiny_data, out, "--epochs", 2, "--report_to",
                                      "trackio"), env=env).returncode == 0
    name = (out / "trackio_run_name").read_text().strip()
    assert name.startswith("run-")
    resumed = run_patched("", train_argv(tiny_data, out, "--epochs", 3, "--report_to",
                                         "trackio", "--resume"), env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    logs = trackio_query(env, f"get_logs('test', {name!r})")
    assert [r["val/bleu"] for r in logs if "val/bleu" in r] == \
        [r["val_bleu"] for r in history(out)]
    assert [r["step"] for r in logs if "val/bleu" in r] == [r["step"] for r in history(out)]
    # another run directory of the same name is another Trackio run, not a resumed one
    other = tmp_path / "b" / "run"
    assert run_patched("", train_argv(tiny_data, other, "--epochs", 1, "--report_to",
                                      "trackio"), env=env).returncode == 0
    assert sorted(trackio_query(env, "get_runs('test')")) == sorted(
        [name, (other / "trackio_run_name").read_text().strip()])


def test_stopping_the_local_slurm_cluster_ends_only_what_it_started(tmp_path):
    """Two processes named slurmd: one the script started (its pid kept), one of the machine's
    own Slurm. stop ends the first alone."""
    named = tmp_path / "slurmd"
    shutil.copy("/bin/sleep", named)
    ours, theirs = (subprocess.Popen([str(named), "60"]) for _ in range(2))
    state = tmp_path / "state"
    state.mkdir()
    (state / "slurmd.pid").write_text(f"{ours.pid}\n")
    try:
        subprocess.run(["bash", str(ROOT / "launch" / "local_slurm_cluster.sh"), "stop"],
                       env={**ENV, "LOCAL_SLURM_STATE": str(state)}, check=True, timeout=30)
        assert ours.wait(timeout=10) == -signal.SIGTERM
        assert theirs.poll() is None and not list(state.iterdir())
    finally:
        theirs.kill()
        ours.kill()
