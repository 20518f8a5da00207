"""A Python interpreter that has imported the heavy libraries once and forks a process for
each command a test starts: `python script.py ARGS`, `python -m module ARGS` or
`python -c CODE ARGS` in a process of its own, without the ~6 s a new interpreter spends
importing torch and transformers.

Each process is a real one: its own pid (signals, kills and process groups are real), its
own working directory, environment, argv, stdin/stdout/stderr, signal handlers, and a fresh
import of every module of this repository (so a test's patch applied before the toolkit is
imported behaves as in a new interpreter); it ends as an interpreter does (SystemExit's
status, a traceback and 1, death by the signal of an uncaught Ctrl-C, atexit handlers).
What it shares with the others is only the third-party libraries imported before the fork
(PRELOADED); a test about what those read from the environment at import time, or about
start-up itself, starts a new interpreter instead.

The test process talks to it over a Unix socket: it sends the command and its three file
descriptors; a reaper process forks the command's process, sends back its pid, waits for it
and sends back its exit status as subprocess reports it (-N: killed by signal N).

    python tests/forked_python.py SOCKET    (started by tests/processes.py)
"""
import json
import os
import resource
import runpy
import signal
import socket
import sys
import types
import warnings

PRELOADED = ("torch", "transformers.models.t5.modeling_t5", "sentencepiece", "sacrebleu",
             "numpy", "pandas", "tqdm.auto", "matplotlib", "rouge_score.rouge_scorer",
             "safetensors.torch", "torch.utils.tensorboard")


def preload():
    """-> the warnings the imports gave, to be shown again by each process, as a new
    interpreter would show them."""
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        for name in PRELOADED:
            __import__(name)
    return shown


def serve(path):
    """Fork a reaper per request; in the command's own process, return the request."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # reapers end unwaited-for
    while True:
        conn, _ = listener.accept()
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        if os.fork() == 0:  # the reaper
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            listener.close()
            pid = os.fork()
            if pid == 0:
                conn.close()
                return json.loads(message), fds
            for fd in fds:
                os.close(fd)
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            _, status = os.waitpid(pid, 0)
            conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode()
                         + b"\n")
            os._exit(0)
        conn.close()
        for fd in fds:
            os.close(fd)


def become(request, fds):
    """Take the command's stdio, directory, environment, session and file size limit."""
    if request["new_session"]:
        os.setsid()
    if request["file_size_limit"] is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE,
                           (request["file_size_limit"], resource.RLIM_INFINITY))
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run(argv, shown):
    """As `python ARGV` runs it; an exception ends the process as it would end a new one."""
    for warning in shown:
        warnings.showwarning(warning.message, warning.category, warning.filename,
                             warning.lineno)
    if argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        sys.path.insert(0, "")
        main = sys.modules["__main__"] = types.ModuleType("__main__")
        exec(compile(argv[1], "<string>", "exec"), main.__dict__)  # noqa: S102 - a test's code
    elif argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        sys.path.insert(0, os.getcwd())
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    sys.path.pop(0)  # this file's folder (tests/) is not on a new interpreter's path
    shown_at_import = preload()
    request, request_fds = serve(sys.argv[1])
    become(request, request_fds)
    run(request["argv"], shown_at_import)
