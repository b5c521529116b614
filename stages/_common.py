"""What every stage shares: its params, its paths, and how it ends.

dvc.yaml runs every stage as a bare `python -m stages.<name>`: no params value is pasted into a command, so
none reaches a shell. A stage finds its files in `layout` (the paths dvc.yaml lists as its deps and outs,
checked by tests/test_deps.py) and a matrix stage its model in DVC's DVC_STAGE (`train@cnn`).

A UserError (bad params, bad or missing data, an unusable device) is one line naming the fix, exit 1;
Ctrl-C (or SIGTERM, as `docker stop` sends) is one line, exit 130. Outputs are written atomically
(fewlabels.atomic), so neither leaves a partial file. Any other exception is a bug in our code and keeps
its traceback.
"""
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

from fewlabels import params
from fewlabels.errors import ParamError, UserError


def load_params() -> params.Params:
    return params.load("params.yaml")


def layout(dataset: str, model: str = "") -> SimpleNamespace:
    """Every path dvc.yaml names, for one dataset and one model, relative to the project's root."""
    return SimpleNamespace(
        checked=Path("data/params.ok"), raw=Path("data/raw", dataset), prepared=Path("data/prepared", dataset),
        split=Path("data/split"), index=Path("data/index"), model=Path("models", f"{model}.pt"),
        run=Path("runs", f"{model}.json"), live=Path("dvclive", model), resume=Path(".resume", model),
        resume_root=Path(".resume"), metrics=Path("metrics", f"{model}.json"), eval=Path("eval", model),
        metrics_dir=Path("metrics"), runs_dir=Path("runs"), summary=Path("reports/summary.md"))


def stage_model(given: str | None, p: params.Params) -> str:
    """The model of a matrix stage: the command line's, else the one in the address DVC gives the stage it
    runs (DVC_STAGE: `train@cnn`, or `sub/dvc.yaml:train@cnn`). It must be one of params.yaml's models."""
    model = given
    if model is None:
        _, at, model = os.environ.get("DVC_STAGE", "").rpartition(":")[2].partition("@")
        if not at:
            raise UserError("name the model on the command line (dvc names it in DVC_STAGE, e.g. train@cnn)")
    if model not in p.models:
        raise ParamError(f"model {model!r} is not one of params.yaml's models {p.models}")
    return model


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _exit_now(signum, frame):
    os._exit(130)  # a second Ctrl-C (or SIGTERM) while exiting: leave at once, not with a traceback from an
    # exit handler it cut short (torch._dynamo, DVCLive register some); the one line is already printed


def run(main) -> None:
    """Call a stage's main() the way `python -m stages.<name>` should end. A KeyboardInterrupt raised with a
    message says what was kept (the train stage's resume state); without one, nothing was."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main()
    except UserError as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt as err:
        signal.signal(signal.SIGINT, _exit_now)
        signal.signal(signal.SIGTERM, _exit_now)
        print(f"interrupted: {err.args[0] if err.args else 'nothing written'}", file=sys.stderr)
        sys.exit(130)
