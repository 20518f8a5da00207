"""Progress where stderr is a file (a scheduler's log): plain lines, not redrawn frames."""
import io

from sonar_t5.common import progress as progress_module
from sonar_t5.common.progress import progress


def test_a_bar_drawn_into_a_file_is_plain_lines(monkeypatch):
    monkeypatch.setattr(progress_module, "PLAIN_LINE_EVERY_S", 0)  # a line per update
    stream = io.StringIO()
    for _ in progress(range(3), desc="epoch 1/2", file=stream, leave=True):
        pass
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[-1].startswith("epoch 1/2: 100%|") and "3/3" in lines[-1]
    assert all(line.startswith("epoch 1/2: ") for line in lines)


def test_a_short_run_with_stderr_in_a_file_writes_no_progress_frames(tiny_run):
    _, result = tiny_run  # its stdout and stderr were captured, not a terminal
    assert "\r" not in result.stderr and "it/s" not in result.stderr
    assert "epoch 2/2  train_loss" in result.stdout  # the epoch lines stay
