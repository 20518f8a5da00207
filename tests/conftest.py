"""Shared fixtures: tiny demo data, a tiny model, a tiny trained run, a tiny encoder
checkpoint, and running scripts as a user does."""
import contextlib
import importlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import traceback
import warnings

# The toolkit's commands run in this process too (run_script): no network, before the hub
# library reads its settings on import.
os.environ["HF_HUB_OFFLINE"] = "1"
# Frozen-encoder caches of the tests' runs: in a temporary directory, not the user's own.
os.environ.setdefault("SONAR_T5_CACHE_DIR", tempfile.mkdtemp(prefix="sonar_t5_test_cache_"))
# Under pytest-xdist each worker, and every process it starts, trains on one thread: two
# workers of two threads each would fight over 2 cores, and one thread count everywhere keeps
# the runs a test compares equal bit for bit.
ONE_THREAD = bool(os.environ.get("PYTEST_XDIST_WORKER"))
if ONE_THREAD:
    os.environ["OMP_NUM_THREADS"] = "1"
# A shell's background job (and a pytest-xdist worker) starts with Ctrl-C ignored, and the
# runs a test starts would inherit that: the Ctrl-C tests need it delivered.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest
import torch

if ONE_THREAD:
    torch.set_num_threads(1)

from sonar_t5.data.synthetic import make_demo_data
from sonar_t5.models import FeatureEncoder, FeatureEncoderConfig
from sonar_t5.models.build import build_encoder, build_model, load_t5_and_tokenizer
from sonar_t5.models.feature_encoder import save_feature_encoder

from .processes import ENV, ROOT, run_python  # noqa: F401 - ENV and ROOT: for the tests
# A model small enough to train in seconds on 2 CPU cores.
# The vocabulary is left to the rule for a decoder trained from scratch (at least 200 pieces,
# at most what the text supports).
TINY_MODEL = ["--t5_model", "t5-tiny", "--encoder_d_model", "32",
              "--encoder_layers", "1", "--hidden_dim", "64", "--num_latents", "8",
              "--num_heads", "4", "--batch_size", "16", "--learning_rate", "1e-3",
              "--warmup_steps", "5", "--num_workers", "0", "--device", "cpu",
              "--num_beams", "1", "--max_new_tokens", "16"]


def run_script(*args, timeout=600, check=False, own_process=False):
    """Run one of the toolkit's commands the way a user does, `script.py ARGS` or `-m module
    ARGS`; no network. Its main() runs in this process (the seconds a new interpreter spends
    importing torch and transformers are paid once per session), with the command's argv,
    working directory and warning filters, stdout and stderr captured, and the exit status a
    shell would see. own_process=True (and anything but the toolkit's own commands, e.g.
    torchrun): a process of its own (tests/processes.py), for what needs one (signals,
    process-wide state)."""
    args = list(map(str, args))
    module = (args[1] if args[0] == "-m" else args[0].removesuffix(".py")) if args else ""
    if own_process or not _toolkit_command(module):
        result = run_python(*args, timeout=timeout)
    else:
        result = _run_in_process(module, args[2:] if args[0] == "-m" else args[1:])
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def _toolkit_command(module):
    """A module of this repository with a main() (the scripts, python -m sonar_t5.evaluation.export, ...)."""
    top = module.split(".")[0]
    return (ROOT / f"{top}.py").is_file() or (ROOT / top / "__init__.py").is_file()


# A fresh interpreter's warning filters (python -W default, without pytest's).
FRESH_WARNING_FILTERS = [("default", DeprecationWarning, "__main__"),
                         ("ignore", DeprecationWarning, None),
                         ("ignore", PendingDeprecationWarning, None),
                         ("ignore", ImportWarning, None), ("ignore", ResourceWarning, None)]


def _run_in_process(module_name, argv):
    entry = importlib.import_module(module_name)
    if not hasattr(entry, "main"):  # a package run with -m: its __main__.py
        entry = importlib.import_module(f"{module_name}.__main__")
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = (sys.argv, os.getcwd(), torch.get_num_threads(), signal.getsignal(signal.SIGTERM),
             signal.getsignal(signal.SIGINT))
    sys.argv = [entry.__file__, *argv]  # argparse's usage lines name the script
    os.chdir(ROOT)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(stdout), \
                contextlib.redirect_stderr(stderr):
            warnings.resetwarnings()
            for action, category, module in FRESH_WARNING_FILTERS:
                warnings.filterwarnings(action, category=category, module=module or "")
            try:
                code = entry.main(argv)
                code = code if isinstance(code, int) else 0
            except SystemExit as stop:  # as the interpreter turns it into a status
                code = stop.code if isinstance(stop.code, int) else stop.code is not None
                if stop.code is not None and not isinstance(stop.code, int):
                    print(stop.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001 - what an uncaught exception prints
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved[0]
        os.chdir(saved[1])
        torch.set_num_threads(saved[2])
        signal.signal(signal.SIGTERM, saved[3])
        signal.signal(signal.SIGINT, saved[4])
    return subprocess.CompletedProcess([module_name, *argv], int(code), stdout.getvalue(),
                                       stderr.getvalue())


def assert_user_error(result, *fragments):
    """One `error:` line naming the culprit, exit status 2, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def data_args(data, split_train="train", split_val="val"):
    return ["--train_features", data / "features" / split_train,
            "--train_manifest", data / "manifests" / f"{split_train}.tsv",
            "--val_features", data / "features" / split_val,
            "--val_manifest", data / "manifests" / f"{split_val}.tsv"]


def held_out_args(data):
    """The test split, scored (with val) when training ends."""
    return ["--test_features", data / "features" / "test",
            "--test_manifest", data / "manifests" / "test.tsv"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("demo_data"), num_train=96, num_val=24,
                          num_test=24, feature_dim=16, seed=0)


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    """Two epochs of the tiny model on the tiny demo data, scored on val and test at the end."""
    out = tmp_path_factory.mktemp("runs") / "tiny_perceiver"
    result = run_script("train_sonar_with_t5.py", *data_args(tiny_data), *held_out_args(tiny_data),
                        *TINY_MODEL,
                        "--epochs", "2", "--resampler_input", "tokens", "--output_dir", out,
                        check=True)
    return out, result


def train(tiny_data, out, *extra, check=True):
    return run_script("train_sonar_with_t5.py", *data_args(tiny_data), *TINY_MODEL,
                      "--output_dir", out, *extra, check=check)


TEXTS = ["i'm going to show you how to fold the paper carefully",
         "now we are going to cut the \"thin\" edges", "café crème, s'il vous plaît"] * 20


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    t5, tok = load_t5_and_tokenizer("t5-tiny", TEXTS, vocab_size=80)
    encoder = build_encoder(None, input_dim=16, d_model=32, num_layers=1, num_heads=4)
    model = build_model(t5=t5, tokenizer=tok, encoder=encoder, t5_model="t5-tiny",
                        resampler_input="tokens", num_latents=8, hidden_dim=64, num_heads=4)
    return model.eval(), tok


@pytest.fixture(scope="module")
def sonar_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    enc = FeatureEncoder(FeatureEncoderConfig(input_dim=16, d_model=32, num_layers=1, num_heads=4))
    path = tmp_path_factory.mktemp("sonar") / "sonar_encoder.pt"
    save_feature_encoder(enc, path)
    return path


def train_argv(data, out, *extra):
    return [*map(str, data_args(data)), *TINY_MODEL, "--output_dir", str(out), *map(str, extra)]


def run_patched(patch, argv, env=None, new_interpreter=False):
    """Run the training script in a process of its own after `patch` (Python source) ran.
    env: variables to add to ENV. new_interpreter: a new Python (what the patch or env
    changes is read when a library is imported), not a fork of tests/forked_python.py's."""
    code = (f"import sys; sys.argv = ['train_sonar_with_t5.py'] + {argv!r}\n{patch}\n"
            "import train_sonar_with_t5; train_sonar_with_t5.main()")
    if new_interpreter:
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**ENV, **(env or {})},
                              capture_output=True, text=True, timeout=600)
    return run_python("-c", code, env={**ENV, **(env or {})})


class Payload:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))
