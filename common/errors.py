"""User-facing errors: one line `error: <what>, <where> (<how to fix>)`, exit status 2, no
traceback."""
import functools
import sys

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error the user caused and can fix. Its message is the whole story."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, what, where=None, fix=None):
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
    prefix = f"{UserError.__module__}.{UserError.__name__}: "
    return last.split(prefix, 1)[-1]


def cli_main(main):
    """Wrap a script's main(): UserError becomes `error: ...` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except UserError as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:  # Ctrl-C before anything worth saving existed
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
