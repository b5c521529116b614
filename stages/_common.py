"""What every stage's main() shares: load and validate params, and turn expected errors into one line."""
import sys
from contextlib import contextmanager

from fewlabels import params as params_mod


@contextmanager
def clear_errors(*kinds: type[BaseException]):
    """Exit non-zero with one readable line (no traceback) for the errors a user can fix."""
    try:
        yield
    except (params_mod.ParamError, *kinds) as err:
        sys.exit(f"error: {err}")


def load_params() -> dict:
    with clear_errors():
        return params_mod.load("params.yaml")
