"""What every stage shares: its params, and how it ends.

A UserError (bad params, bad or missing data, an unusable device) is one line naming the fix, exit 1;
Ctrl-C (or SIGTERM, as `docker stop` sends) is one line, exit 130. Outputs are written atomically
(fewlabels.atomic), so neither leaves a partial file. Any other exception is a bug in our code and keeps
its traceback.
"""
import signal
import sys

from fewlabels import params
from fewlabels.errors import UserError


def load_params() -> params.Params:
    return params.load("params.yaml")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(main) -> None:
    """Call a stage's main() the way `python -m stages.<name>` should end. A KeyboardInterrupt raised with a
    message says what was kept (the train stage's resume state); without one, nothing was."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main()
    except UserError as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt as err:
        print(f"interrupted: {err.args[0] if err.args else 'nothing written'}", file=sys.stderr)
        sys.exit(130)
