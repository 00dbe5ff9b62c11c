"""``python -m lstm_convert`` and the ``lstm-convert`` command.

Ctrl-C or SIGTERM before the command line has installed its own handling (while Python and the
package start) ends the process at once and quietly, with status 130 or 143: nothing is written yet.
"""

import os
import signal


def _early(signum: int, frame: object) -> None:
    os._exit(128 + signum)


signal.signal(signal.SIGINT, _early)
signal.signal(signal.SIGTERM, _early)

from lstm_convert.cli import main  # noqa: E402 - after the handlers, so that an early interrupt is quiet


def run() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    run()
