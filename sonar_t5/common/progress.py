"""Progress bars: tqdm's on a terminal; where stderr is a file (a scheduler's log,
`> run.log 2>&1`), an occasional plain line instead of the carriage-return frames a bar
redraws several times a second (a 14-epoch run wrote 326 KB of them)."""
import re
import sys

from tqdm.auto import tqdm

# Not on a terminal: a bar shows once it has run this long, then a line this often.
PLAIN_LINE_EVERY_S = 60
CURSOR_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def progress(iterable=None, **tqdm_args):
    """tqdm(iterable, **tqdm_args), in plain lines where stderr is not a terminal."""
    stream = tqdm_args.get("file") or sys.stderr
    if not stream.isatty():
        tqdm_args.update(file=PlainLines(stream), mininterval=PLAIN_LINE_EVERY_S,
                         delay=PLAIN_LINE_EVERY_S, ascii=True)
    return tqdm(iterable, **tqdm_args)


class PlainLines:
    """A file for tqdm that makes each frame it draws one line: carriage returns and cursor
    moves dropped, the frames that only clear a line skipped."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        frame = CURSOR_CODES.sub("", text).replace("\r", "").strip()
        if frame:
            self.stream.write(frame + "\n")

    def flush(self):
        self.stream.flush()
