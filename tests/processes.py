"""Commands in processes of their own, like subprocess.Popen([sys.executable, ...]) and
subprocess.run, started from tests/forked_python.py's pre-imported interpreter (a fork costs
milliseconds, a new interpreter ~6 s of imports; the suite starts dozens)."""
import atexit
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
_server = {}

# Python source, for a patched torchrun script: a note on stderr where a DDP wrapper outlives
# the process group. gloo's clean-up can then deadlock at the process's exit, until torchrun
# kills it 30 s later.
DDP_WATCH = """
import sys, weakref, torch
_wrappers, _DDP = [], torch.nn.parallel.DistributedDataParallel
_init, _destroy = _DDP.__init__, torch.distributed.destroy_process_group
def _recorded(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    _wrappers.append(weakref.ref(self))
def _destroy_process_group(*args, **kwargs):
    if any(w() is not None for w in _wrappers):
        print("DDP wrapper alive when the process group is destroyed", file=sys.stderr)
    return _destroy(*args, **kwargs)
_DDP.__init__, torch.distributed.destroy_process_group = _recorded, _destroy_process_group
"""


def patched_script(path, patch, script, argv):
    """A file at path that runs `patch` (Python source), then script (of the checkout) with
    argv: torchrun starts each of its processes from a file."""
    path.write_text(f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                    f"sys.argv = {[script, *map(str, argv)]!r}\n{patch}\n"
                    f"import runpy; runpy.run_path({script!r}, run_name='__main__')\n")
    return path


def _server_socket():
    """The forking interpreter's socket; started on first use, stopped when the tests end."""
    if _server and _server["process"].poll() is None:
        return _server["socket"]
    folder = Path(tempfile.mkdtemp(prefix="sonar_t5_forks_"))
    path, log = folder / "python.sock", folder / "server.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "forked_python.py"),
                                    str(path)], cwd=ROOT, env=ENV, stdin=subprocess.DEVNULL,
                                   stdout=log_file, stderr=log_file)
    deadline = time.time() + 120
    while not path.exists():
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise RuntimeError(f"the forking interpreter did not start:\n{log.read_text()}")
        time.sleep(0.05)
    _server.update(process=process, socket=str(path))
    atexit.register(process.kill)
    return _server["socket"]


class ForkedProcess:
    """The parts of subprocess.Popen the tests use: pid, returncode, stdout/stderr (PIPE,
    DEVNULL, a file or inherited), poll, wait, communicate, send_signal, kill, terminate.
    file_size_limit: writes past that many bytes fail (EFBIG), as on a full disk."""

    def __init__(self, args, cwd=ROOT, env=None, stdin=None, stdout=None, stderr=None,
                 text=False, start_new_session=False, file_size_limit=None):
        sent, self._kept, self.stdout, self.stderr = [], [], None, None
        sent.append(os.open(os.devnull, os.O_RDONLY) if stdin in (None, subprocess.DEVNULL)
                    else os.dup(stdin.fileno()))
        for name, target in (("stdout", stdout), ("stderr", stderr)):
            if target == subprocess.PIPE:
                read, write = os.pipe()
                setattr(self, name, open(read, "r" if text else "rb"))
                sent.append(write)
            elif target == subprocess.DEVNULL:
                sent.append(os.open(os.devnull, os.O_WRONLY))
            elif target == subprocess.STDOUT:
                sent.append(os.dup(sent[-1]))
            elif target is None:
                sent.append(os.dup(1 if name == "stdout" else 2))
            else:
                sent.append(os.dup(target if isinstance(target, int) else target.fileno()))
        request = {"argv": list(map(str, args)), "cwd": str(cwd), "env": dict(env or ENV),
                   "new_session": start_new_session, "file_size_limit": file_size_limit}
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.connect(_server_socket())
        socket.send_fds(self._conn, [json.dumps(request).encode()], sent)
        for fd in sent:
            os.close(fd)
        self._received = b""
        self.pid = self._message(timeout=60)["pid"]
        self.returncode = None

    def _message(self, timeout):
        deadline = None if timeout is None else time.time() + timeout
        while b"\n" not in self._received:
            left = None if deadline is None else max(0.0, deadline - time.time())
            if not select.select([self._conn], [], [], left)[0]:
                return None
            chunk = self._conn.recv(4096)
            if not chunk:
                raise RuntimeError("the forking interpreter's reaper ended without a status")
            self._received += chunk
        line, self._received = self._received.split(b"\n", 1)
        return json.loads(line)

    def poll(self):
        if self.returncode is None:
            message = self._message(timeout=0)
            if message is not None:
                self.returncode = message["returncode"]
                self._conn.close()
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            message = self._message(timeout)
            if message is None:
                raise subprocess.TimeoutExpired(["python", str(self.pid)], timeout)
            self.returncode = message["returncode"]
            self._conn.close()
        return self.returncode

    def communicate(self, timeout=None):
        start, outputs = time.time(), {}

        def read_all(name):
            outputs[name] = getattr(self, name).read()

        readers = [threading.Thread(target=read_all, args=(name,), daemon=True)
                   for name in ("stdout", "stderr") if getattr(self, name) is not None]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(None if timeout is None else max(0.0, start + timeout - time.time()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(["python", str(self.pid)], timeout)
        self.wait(None if timeout is None else max(0.0, start + timeout - time.time()))
        for name in ("stdout", "stderr"):
            if getattr(self, name) is not None:
                getattr(self, name).close()
        return outputs.get("stdout"), outputs.get("stderr")

    def send_signal(self, signum):
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self):
        self.send_signal(9)

    def terminate(self):
        self.send_signal(15)


def descendants(pid):
    """Every process under pid now (Linux /proc)."""
    try:
        found = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return found + [d for c in found for d in descendants(c)]


def alive(pid):
    """pid runs (not a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class ProcessTree:
    """`with ProcessTree(proc) as tree:` notes every process under proc while it runs (polled
    every 20 ms: DataLoader workers, torchrun's processes and theirs); tree.left_running(),
    after proc ended: those still running (the check that a run leaves nothing behind)."""

    def __init__(self, proc):
        self.proc, self.seen, self._done = proc, set(), threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._done.is_set():
            self.seen.update(descendants(self.proc.pid))
            self._done.wait(0.02)

    def __exit__(self, *error):
        self._done.set()
        self._thread.join()

    def left_running(self, grace=3.0):
        """The processes seen that still run `grace` seconds after the watch ended (a process
        told to leave takes a moment)."""
        deadline = time.time() + grace
        while any(alive(pid) for pid in self.seen) and time.time() < deadline:
            time.sleep(0.05)
        return sorted(pid for pid in self.seen if alive(pid))


def start_python(*args, **popen_args):
    """`python ARGS` (a script, -m module or -c code) as a ForkedProcess."""
    return ForkedProcess(args, **popen_args)


def run_python(*args, env=None, timeout=600, cwd=ROOT, file_size_limit=None):
    """`python ARGS` to its end, output captured as text, like subprocess.run."""
    process = ForkedProcess(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, file_size_limit=file_size_limit)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return subprocess.CompletedProcess(["python", *map(str, args)], process.returncode,
                                       stdout, stderr)
