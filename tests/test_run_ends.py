"""Every error ends the run: the one-line error, the exit status, within seconds, and no
process of the run left behind (DataLoader workers, torchrun's processes and theirs)."""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from sonar_t5.models.checkpoint import load_checkpoint

from .conftest import ENV, ROOT, run_script, train_argv
from .processes import DDP_WATCH, ProcessTree, patched_script, start_python


def run_watched(*args, timeout=120):
    """`python ARGS` to its end, watching its processes. -> (exit status, stdout, stderr,
    seconds from its `error:` line to its exit or None, processes still running after it)."""
    proc = start_python(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        start_new_session=True)
    output, error_at = {"stdout": [], "stderr": []}, []

    def read(name):
        for line in getattr(proc, name):
            if line.startswith("error: ") and not error_at:
                error_at.append(time.time())
            output[name].append(line)

    readers = [threading.Thread(target=read, args=(n,), daemon=True) for n in output]
    with ProcessTree(proc) as tree:
        for reader in readers:
            reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("the run did not end: " + "".join(output["stderr"])[-2000:])
        ended = time.time()
    for reader in readers:
        reader.join(10)
    return (proc.returncode, "".join(output["stdout"]), "".join(output["stderr"]),
            ended - error_at[0] if error_at else None, tree.left_running())


def patched(patch, script, argv):
    """python -c: `patch` (Python source), then SCRIPT's main() with argv."""
    return ("-c", f"import sys; sys.argv = [{script!r}] + {list(map(str, argv))!r}\n{patch}\n"
                  f"import {script.removesuffix('.py')} as s; s.main()")


def one_error_line(stderr):
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


def corrupt(folder, name):
    """An object array saved with pickling: a feature file the toolkit refuses to read."""
    np.save(folder / name, np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.fixture(scope="module")
def bad_data(tiny_data, tmp_path_factory):
    """The tiny data with one unreadable feature file in train and val, and one of NaN
    features in test (its header reads well: found only when the file is read)."""
    data = tmp_path_factory.mktemp("bad") / "data"
    shutil.copytree(tiny_data, data)
    for split, index in (("train", 50), ("val", 10)):
        corrupt(data / "features" / split, f"{split}_{index:05d}.npy")
    nan = data / "features" / "test" / "test_00010.npy"
    np.save(nan, np.full_like(np.load(nan), np.nan))
    return data


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("script", ["train", "validate"])
def test_a_bad_file_read_by_a_worker_ends_the_run_and_all_its_processes(
        script, workers, bad_data, tiny_data, tiny_run, tmp_path):
    if script == "train":
        argv = ["train_sonar_with_t5.py",
                *train_argv(tiny_data, tmp_path / "run", "--num_workers", workers)]
        argv[argv.index("--train_features") + 1] = str(bad_data / "features" / "train")
    else:
        argv = ["validate_perceiver_model.py", "--checkpoint", tiny_run[0] / "best_model.pt",
                "--features", bad_data / "features" / "val", "--manifest",
                tiny_data / "manifests" / "val.tsv", "--num_workers", workers,
                "--output", tmp_path / "validation"]
    code, _, stderr, after_error, left = run_watched(*argv)
    assert code == 2
    assert one_error_line(stderr).startswith("error: cannot read feature file (ValueError: "
                                             "Object arrays cannot be loaded")
    assert after_error < 10 and left == []


@pytest.mark.slow
def test_a_bad_test_file_at_the_end_of_training_ends_the_run(bad_data, tiny_data, tmp_path):
    argv = train_argv(tiny_data, tmp_path / "run", "--epochs", 1, "--num_workers", 2,
                      "--test_features", bad_data / "features" / "test",
                      "--test_manifest", tiny_data / "manifests" / "test.tsv")
    code, _, stderr, after_error, left = run_watched("train_sonar_with_t5.py", *argv)
    line = one_error_line(stderr)
    assert code == 2 and "NaN or Inf" in line and "test_00010.npy" in line, line
    assert after_error < 10 and left == []
    assert load_checkpoint(tmp_path / "run" / "best_model.pt")["epoch"] == 1


# Errors met elsewhere while the workers wait for work: in collate (run by a worker) and in
# the training step (the main process).
COLLATE_FAILS = """
from sonar_t5.data.dataset import Collator
_call, _calls = Collator.__call__, []
def call(self, rows):
    _calls.append(1)
    if len(_calls) == 3:
        raise RuntimeError("a collate error")
    return _call(self, rows)
Collator.__call__ = call
"""
STEP_FAILS = """
import sonar_t5.training.engine as engine
_step, _steps = engine.optimizer_step, []
def step(*args, **kwargs):
    _steps.append(1)
    if len(_steps) == 3:
        raise ValueError("a training step error")
    return _step(*args, **kwargs)
engine.optimizer_step = step
"""


@pytest.mark.slow
@pytest.mark.parametrize("patch, message", [(COLLATE_FAILS, "RuntimeError: a collate error"),
                                            (STEP_FAILS, "ValueError: a training step error")],
                         ids=["in collate", "in the training step"])
def test_an_unexpected_error_with_workers_up_ends_every_process(patch, message, tiny_data,
                                                                tmp_path):
    argv = train_argv(tiny_data, tmp_path / "run", "--num_workers", 2, "--batch_size", 8)
    code, _, stderr, _, left = run_watched(*patched(patch, "train_sonar_with_t5.py", argv))
    assert code == 1 and message in stderr  # not a user's error: the traceback says where
    assert left == []


WORKER_KILLED_IN_EPOCH_2 = """
import os, signal, torch.utils.data
from sonar_t5.data.dataset import FeatureDataset
_get = FeatureDataset.__getitem__
def get(self, i):
    if torch.utils.data.get_worker_info() is not None and os.path.exists({last!r}):
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
    return _get(self, i)
FeatureDataset.__getitem__ = get
"""


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_ends_the_run_in_one_line(tiny_data, tmp_path):
    out = tmp_path / "run"
    patch = WORKER_KILLED_IN_EPOCH_2.format(last=str(out / "last_model.pt"))
    argv = train_argv(tiny_data, out, "--epochs", 3, "--num_workers", 2)
    code, _, stderr, after_error, left = run_watched(*patched(patch, "train_sonar_with_t5.py",
                                                              argv))
    assert code == 1
    line = one_error_line(stderr)
    assert line.startswith("error: DataLoader worker (pid") and "killed by signal" in line \
        or "exited unexpectedly" in line, line
    assert "lower --num_workers or --batch_size" in line
    assert after_error < 10 and left == []
    assert load_checkpoint(out / "last_model.pt")["epoch"] == 1  # the last checkpoint, intact
    run_script("train_sonar_with_t5.py", *train_argv(tiny_data, out, "--epochs", 2,
                                                     "--resume"), check=True)


@pytest.mark.slow
def test_a_bad_file_under_torchrun_ends_every_process(bad_data, tiny_data, tmp_path):
    argv = train_argv(tiny_data, tmp_path / "run", "--num_workers", 2, "--batch_size", 8)
    argv[argv.index("--train_features") + 1] = str(bad_data / "features" / "train")
    script = patched_script(tmp_path / "train.py", DDP_WATCH, "train_sonar_with_t5.py", argv)
    code, _, stderr, _, left = run_watched("-m", "torch.distributed.run", "--nproc_per_node",
                                           2, script)
    assert code != 0 and "error: cannot read feature file" in stderr
    assert "DDP wrapper alive" not in stderr  # its exit could deadlock
    assert left == []


@pytest.mark.slow
def test_torchruns_processes_stop_when_the_launcher_is_killed(tiny_data, tmp_path):
    """kill -9 of the job's process group: torchrun dies, its processes (each in a session of
    its own) notice, stop together as on SIGTERM, save and exit."""
    out = tmp_path / "run"
    argv = train_argv(tiny_data, out, "--epochs", 4, "--batch_size", 2, "--log_every", 4)
    proc = start_python("-m", "torch.distributed.run", "--nproc_per_node", 2,
                        "train_sonar_with_t5.py", *argv, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = out / "train_log.jsonl"
    with ProcessTree(proc) as tree:
        deadline = time.time() + 120
        while not (log.is_file() and len(log.read_text().splitlines()) >= 2):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert len(tree.seen) >= 2  # the two training processes (and no more: no workers)
    assert tree.left_running(grace=60) == []
    assert load_checkpoint(out / "last_model.pt")["state"]["batches_done"] > 0  # saved mid-epoch


@pytest.mark.slow
def test_ctrl_c_during_the_imports_is_one_word(tmp_path):
    """A new interpreter (the imports are what is interrupted), with Ctrl-C not ignored (a
    test worker's children inherit it ignored)."""
    proc = subprocess.Popen([sys.executable, "train_sonar_with_t5.py", "--demo",
                             "--output_dir", tmp_path / "run"], cwd=ROOT, env=ENV,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(1.0)  # importing torch and transformers takes seconds
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and stderr == "interrupted\n", stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_every_user_error_comes_back_from_a_worker_as_itself():
    """PyTorch re-raises a worker's error as type(error)(its traceback's text): each kind of
    UserError must take one message, or it comes back as a RuntimeError (a traceback, exit 1)."""
    import sonar_t5.data.encoder_cache.reader  # noqa: F401 - the modules that define UserErrors
    import sonar_t5.training.engine  # noqa: F401
    from sonar_t5.common.errors import UserError, one_line

    kinds, found = [UserError], []
    while kinds:
        kind = kinds.pop()
        found.append(kind)
        kinds += kind.__subclasses__()
    assert len(found) >= 3
    for kind in found:
        text = f"Caught {kind.__name__} in DataLoader worker process 0.\nOriginal Traceback:\n" \
               f"{kind.__module__}.{kind.__qualname__}: what went wrong, file.npy (fix)"
        assert one_line(kind(text)) == "what went wrong, file.npy (fix)", kind


@pytest.mark.slow
def test_workers_end_with_a_main_process_killed_outright(tiny_data, tmp_path):
    """kill -9 of the main process: its workers go at once (not within PyTorch's 5 s), so the
    run directory's lock they inherited is free for the --resume that follows."""
    out = tmp_path / "run"
    argv = train_argv(tiny_data, out, "--epochs", 3, "--batch_size", 2, "--num_workers", 2)
    proc = start_python("train_sonar_with_t5.py", *argv, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    with ProcessTree(proc) as tree:
        deadline = time.time() + 120
        while not (out / "last_model.pt").is_file():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=10)
    assert len(tree.seen) >= 2 and tree.left_running(grace=1.0) == []
    run_script("train_sonar_with_t5.py", *train_argv(tiny_data, out, "--epochs", 3,
                                                     "--batch_size", 2, "--resume"), check=True)
