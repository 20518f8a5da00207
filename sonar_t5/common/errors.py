"""User-facing errors: one line `error: <what>, <where> (<how to fix>)`, exit status 2, no
traceback."""
import functools
import re
import signal
import sys
import warnings

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error the user caused and can fix. Its message is the whole story. A subclass must
    be constructible from one message too: PyTorch re-raises an error met in a DataLoader
    worker as type(error)(its traceback's text), and a RuntimeError where that fails."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, what, where=None, fix=None):
        self.what, self.where, self.fix = what, where, fix  # to say it again of another place
        message = what if where is None else f"{what}, {where}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)


def one_line(error):
    """The user-facing line of an error.

    A UserError raised inside a DataLoader worker comes back re-wrapped by PyTorch with the
    worker's traceback in its message; the original message is its last line.
    """
    lines = [line for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
    return last.split(prefix, 1)[-1]


# A DataLoader worker that died without an error of its own (the out-of-memory killer, kill -9):
# PyTorch raises a RuntimeError naming it, wherever the main process is at that moment.
WORKER_DIED = re.compile(r"DataLoader worker \(pids?\(?s?\)? [^)]*\) "
                         r"(is killed by signal|exited unexpectedly)[^\n]*")
WORKER_DIED_FIX = ("the system may have run out of memory: lower --num_workers or --batch_size; "
                   "checkpoints already written are intact")


class Terminated(KeyboardInterrupt):
    """SIGTERM (SLURM and most schedulers send it before killing a job): handled like Ctrl-C,
    exit status 143."""


def stop_here(signum, frame):
    """Ctrl-C or SIGTERM: raised where the program is. Further ones are ignored from here on:
    the program is on its way out (saving, putting an earlier run back, closing progress
    bars), and a second Ctrl-C half-way through would cut that short."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def quiet_ctrl_c_until_main():
    """A script's first call: Ctrl-C during its imports (seconds of torch and transformers)
    prints "interrupted" and exits 130, instead of a traceback from inside a library. cli_main
    takes over when main() starts. Left alone where Ctrl-C is ignored (a background job)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_while_starting)


def _interrupted_while_starting(signum, frame):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("interrupted", file=sys.stderr)
    raise SystemExit(130)


# Library warnings that describe what this toolkit does on purpose, not a problem.
QUIET_WARNINGS = (
    # a non-finite gradient skips the optimizer step while the schedule moves on
    r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`",
)


def show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line, `warning: <message>`, without the library's source line."""
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=sys.stderr if file is None else file)


def cli_main(main):
    """Wrap a script's main(): UserError becomes `error: ...` on stderr and exit status 2;
    warnings print as one line each."""

    @functools.wraps(main)
    def wrapper(argv=None):
        found = signal.getsignal(signal.SIGINT)
        if found is not signal.SIG_IGN:  # started in the background with Ctrl-C ignored: still so
            signal.signal(signal.SIGINT, stop_here)
        signal.signal(signal.SIGTERM, stop_here)
        warnings.showwarning = show_warning
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        try:
            return main(argv)
        except UserError as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(error.exit_code)
        except RuntimeError as error:
            died = WORKER_DIED.search(str(error))
            if died is None:
                raise
            print(f"error: {died.group(0).rstrip('. ')} ({WORKER_DIED_FIX})", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM before anything worth saving
            terminated = isinstance(stop, Terminated)
            print("terminated" if terminated else "interrupted", file=sys.stderr)
            sys.exit(143 if terminated else 130)
        finally:
            if signal.getsignal(signal.SIGINT) is stop_here:  # after a stop, one more is still ignored
                signal.signal(signal.SIGINT, signal.SIG_DFL if found is None else found)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # during the interpreter's exit: ends it

    return wrapper
