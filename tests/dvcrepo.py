"""Running git and DVC in a temporary repository, for the end-to-end tests."""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the project checkout these tests belong to


def run(repo: Path, *cmd: str) -> str:
    """Run a command in `repo` with this venv's `python` and `dvc` first on PATH; return its output."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # stages must import the copies
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"  # no network here
    result = subprocess.run(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}"
    return result.stdout


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def stages_skipped(output: str) -> list[str]:
    return re.findall(r"Stage '([^']+)' didn't change, skipping", output)


def init(repo: Path) -> None:
    """git init + identity + dvc init in `repo`."""
    run(repo, "git", "init", "-q")
    for key, value in (("user.name", "test"), ("user.email", "test@example.com"), ("commit.gpgsign", "false")):
        run(repo, "git", "config", key, value)
    run(repo, "dvc", "init", "-q")


def commit(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", message)
