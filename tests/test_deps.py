"""dvc.yaml's code deps are exactly what each stage's command imports, transitively, from the project.

DVC reruns a stage only when a declared dep changes, so a missing dep means `dvc repro` reports "up to
date" over results of old code. The import closure is derived from the code itself (every import
statement, at any depth, including imports inside functions), so the two cannot drift apart.
"""
import ast
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from dvcrepo import REPO
from fewlabels import params

PACKAGES = ("fewlabels", "stages")  # the project's own code; everything else is an installed dependency


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The project file that `import name` executes, or None for a name that is not a project module."""
    path = root.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Project modules named by any import in `path` (and their packages, whose __init__ runs first). A module
    picked by name at run time, `importlib.import_module(f"package.{name}")`, may be any module of that package."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif (isinstance(node, ast.Call) and ast.unparse(node.func) == "importlib.import_module"
              and isinstance(node.args[0], ast.JoinedStr)):
            package = node.args[0].values[0].value.rstrip(".")
            names |= {f"{package}.{f.stem}" for f in module_file(package).parent.glob("*.py")}
    parents = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}
    return {n for n in names | parents if n.split(".")[0] in PACKAGES and module_file(n)}


def import_closure(module: str, root: Path = REPO) -> set[str]:
    """Every project file `python -m <module>` imports, directly or not, as paths relative to `root`."""
    seen, todo = set(), [module]
    while todo:
        path = module_file(todo.pop(), root)
        if path not in seen:
            seen.add(path)
            todo += imported_modules(path)
    return {str(p.relative_to(root)) for p in seen}


def stages(dvc_yaml: dict) -> dict[str, dict]:
    return dvc_yaml["stages"]


def stage_module(stage: dict) -> str:
    [module] = re.findall(r"python -m ([\w.]+)", stage["cmd"])
    return module


def code_deps(stage: dict) -> set[str]:
    return {d for d in stage["deps"] if d.endswith(".py")}


def mismatches(dvc_yaml: dict) -> dict[str, dict[str, set[str]]]:
    """{stage: {'missing': imported but not a dep, 'extra': a dep but not imported}} for every stage off."""
    out = {}
    for name, stage in stages(dvc_yaml).items():
        imported, declared = import_closure(stage_module(stage)), code_deps(stage)
        if imported != declared:
            out[name] = {"missing": imported - declared, "extra": declared - imported}
    return out


@pytest.fixture(scope="module")
def dvc_yaml() -> dict:
    return YAML(typ="safe", pure=True).load(REPO / "dvc.yaml")


def test_every_stage_lists_exactly_the_project_files_it_imports(dvc_yaml):
    assert mismatches(dvc_yaml) == {}


def test_the_closure_follows_imports_through_other_modules():
    """The train stage reaches augment.py only through the engine: the closure must still hold it."""
    assert "fewlabels/augment.py" not in {str(module_file(m).relative_to(REPO))
                                          for m in imported_modules(REPO / "stages/train.py")}
    assert "fewlabels/augment.py" in import_closure("stages.train")


def every_declared_code_dep(dvc_yaml=YAML(typ="safe", pure=True).load(REPO / "dvc.yaml")):
    return [(name, dep) for name, stage in stages(dvc_yaml).items() for dep in sorted(code_deps(stage))]


@pytest.mark.parametrize("stage, dep", every_declared_code_dep())
def test_dropping_any_code_dep_is_caught(dvc_yaml, stage, dep):
    """The check is not vacuous: with any one import missing from dvc.yaml it reports that stage and file."""
    broken = {"stages": {name: dict(s) for name, s in stages(dvc_yaml).items()}}
    broken["stages"][stage]["deps"] = [d for d in broken["stages"][stage]["deps"] if d != dep]
    assert mismatches(broken) == {stage: {"missing": {dep}, "extra": set()}}


def test_stages_read_and_write_the_paths_dvc_yaml_tracks():
    """dvc.yaml's commands pass no paths (no params value may reach a shell): the stages take theirs from
    stages._common.layout. Every file dvc.yaml tracks for a stage is a layout path the stage's code uses, or
    inside one, and every layout path the code uses is tracked (but the git-ignored resume folder). The check
    stage's output and params.yaml itself order and check the stages; DVC resolves dvc.yaml here."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    from stages._common import layout

    with Repo(str(REPO)) as repo:
        resolved = [(s.addressing, [d.def_path for d in [*s.deps, *s.outs] if not isinstance(d, ParamsDependency)])
                    for s in repo.index.stages]
    dataset = params.load(REPO / "params.yaml").dataset
    assert [name for name, _ in resolved][:2] == ["check", "download"]
    for address, tracked in resolved:
        name, _, model = address.partition("@")
        paths = layout(dataset, model)
        code = (REPO / "stages" / f"{name}.py").read_text()
        used = {getattr(paths, field) for field in re.findall(r"\bpaths\.(\w+)", code)} - {paths.resume}
        if name == "check":  # it writes its own output; of the others it only removes dead runs' temporaries
            used = {paths.checked}
        ordering = {paths.checked, Path("params.yaml")}
        for path in (Path(p) for p in tracked if not p.endswith(".py")):
            assert path in ordering or any(path == u or u in path.parents for u in used), (address, path, used)
        for u in used:
            assert any(u == Path(t) or u in Path(t).parents for t in tracked), (address, u, tracked)
