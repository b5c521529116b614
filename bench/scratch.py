"""A throwaway git + DVC repository holding a copy of the pipeline: where the end-to-end tests
(tests/dvcrepo.py) and the benchmarks (bench/common.py) run the real `dvc`. Torch-free."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fewlabels import params

REPO = Path(__file__).resolve().parent.parent  # the project checkout


def child_env() -> dict:
    """This venv's `python` and `dvc` first on PATH, and no PYTHONPATH: stages must import the copy's packages."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"  # no network here
    return env


def copy_pipeline(repo: Path, raw: dict) -> Path:
    """The pipeline's code, dvc.yaml and .gitignore copied into `repo`, with params.yaml written from `raw`
    (checked by the schema first)."""
    params.validate(raw)
    repo.mkdir(parents=True, exist_ok=True)
    for name in ("fewlabels", "stages"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, repo / name)
    params.write(raw, repo / "params.yaml")
    return repo


def _git_dvc(repo: Path, *cmd: str) -> None:
    subprocess.run(cmd, cwd=repo, env=child_env(), check=True, stdout=subprocess.DEVNULL)


def init(repo: Path) -> None:
    """git init (with an identity of its own) + dvc init in `repo`, with the project's plot templates."""
    _git_dvc(repo, "git", "init", "-q")
    for key, value in (("user.name", "fewlabels"), ("user.email", "fewlabels@localhost"), ("commit.gpgsign", "false")):
        _git_dvc(repo, "git", "config", key, value)
    _git_dvc(repo, "dvc", "init", "-q")
    # dvc.yaml's plots name the project's templates (.dvc/plots/<name>.json)
    shutil.copytree(REPO / ".dvc" / "plots", repo / ".dvc" / "plots")


def commit(repo: Path, message: str) -> None:
    _git_dvc(repo, "git", "add", "-A")
    _git_dvc(repo, "git", "commit", "-q", "-m", message)
