"""Running git and DVC in a temporary repository, for the end-to-end tests."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from fewlabels import params

REPO = Path(__file__).resolve().parent.parent  # the project checkout these tests belong to


def write_params(directory: Path, settings: dict) -> Path:
    """The default params.yaml (the schema's, not the workspace's, which a user's `dvc exp run -S` edits) with
    `settings` ({dotted key: value}) on top, checked by the schema, written into `directory`: the same keys
    and values `dvc exp run -S key=value` would set."""
    raw = params.default_raw()
    for key, value in settings.items():
        params.set_key(raw, key, value)
    params.validate(raw)
    params.write(raw, directory / "params.yaml")
    return directory / "params.yaml"


def copy_pipeline(repo: Path, settings: dict) -> Path:
    """A copy of the pipeline's code, dvc.yaml and .gitignore in `repo`, with params.yaml plus `settings`."""
    repo.mkdir(parents=True, exist_ok=True)
    for name in ("fewlabels", "stages"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, repo / name)
    write_params(repo, settings)
    return repo


def child_env() -> dict:
    """This venv's `python` and `dvc` first on PATH, and no PYTHONPATH: stages must import the repo's copies."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"  # no network here
    return env


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


def init(repo: Path) -> None:
    """git init + identity + dvc init in `repo`, with the project's plot templates."""
    run(repo, "git", "init", "-q")
    for key, value in (("user.name", "test"), ("user.email", "test@example.com"), ("commit.gpgsign", "false")):
        run(repo, "git", "config", key, value)
    run(repo, "dvc", "init", "-q")
    # dvc.yaml's plots name the project's templates (.dvc/plots/<name>.json)
    shutil.copytree(REPO / ".dvc" / "plots", repo / ".dvc" / "plots")


def commit(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", message)
