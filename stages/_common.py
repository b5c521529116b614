"""What every stage shares: its params, and how it ends.

A UserError (bad params, bad or missing data, an unusable device) is one line naming the fix, exit 1;
Ctrl-C is one line, exit 130. Outputs are written atomically (fewlabels.atomic), so neither leaves a
partial file. Any other exception is a bug in our code and keeps its traceback.
"""
import sys

from fewlabels import params
from fewlabels.errors import UserError


def load_params() -> params.Params:
    return params.load("params.yaml")


def run(main) -> None:
    """Call a stage's main() the way `python -m stages.<name>` should end."""
    try:
        main()
    except UserError as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        sys.exit(130)
