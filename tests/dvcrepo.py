"""Running git and DVC in a temporary repository, for the end-to-end tests (the repository itself: bench.scratch)."""
import re
import subprocess
from pathlib import Path

from bench import scratch
from bench.scratch import REPO, child_env, commit, init
from fewlabels import params

__all__ = ["REPO", "child_env", "commit", "copy_pipeline", "init", "run", "stages_run", "stages_skipped",
           "write_params"]  # REPO, commit and init: bench.scratch's, for the tests that import them from here


def settings_on_defaults(settings: dict) -> dict:
    """The default params (the schema's, not the workspace's, which a user's `dvc exp run -S` edits) with
    `settings` ({dotted key: value}) on top: the same keys and values `dvc exp run -S key=value` would set."""
    raw = params.default_raw()
    for key, value in settings.items():
        params.set_key(raw, key, value)
    return raw


def write_params(directory: Path, settings: dict) -> Path:
    """settings_on_defaults(settings), checked by the schema, written into `directory`/params.yaml."""
    raw = settings_on_defaults(settings)
    params.validate(raw)
    params.write(raw, directory / "params.yaml")
    return directory / "params.yaml"


def copy_pipeline(repo: Path, settings: dict) -> Path:
    """A copy of the pipeline's code, dvc.yaml and .gitignore in `repo`, with the default params plus `settings`."""
    return scratch.copy_pipeline(repo, settings_on_defaults(settings))


def run(repo: Path, *cmd: str, ok: bool = True, env: dict | None = None) -> str:
    """Run a command in `repo` with this venv's `python` and `dvc` first on PATH (and `env` on top); return its
    output. It must succeed, or with ok=False fail."""
    result = subprocess.run(cmd, cwd=repo, env=child_env() | (env or {}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=300)
    assert (result.returncode == 0) == ok, f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}"
    return result.stdout


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def stages_skipped(output: str) -> list[str]:
    return re.findall(r"Stage '([^']+)' didn't change, skipping", output)
