"""The ``blockctl`` console script of the wheel: the Rust CLI itself, run in this process
through the extension module, so the wheel carries one copy of the code and the command
behaves exactly like the ``blockctl`` binary (same arguments, output and exit codes)."""

import signal
import sys

from ._native import run_cli


def main() -> None:
    # Behave like a native command line tool: a closed pipe ends it quietly, and Ctrl-C
    # ends it at once (Python's own handler would wait until Rust hands back control).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(run_cli(sys.argv))


if __name__ == "__main__":
    main()
