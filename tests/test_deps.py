"""dvc.yaml's code deps are exactly what each stage's command imports, transitively, from the project.

DVC reruns a stage only when a declared dep changes, so a missing dep means `dvc repro` reports "up to
date" over results of old code, and an extra one reruns it for nothing. The import closure is derived from
the code itself (every import statement, at any depth, including imports inside functions), so the two
cannot drift apart. A stage that picks a model or method by name imports that one module of the package
(fewlabels.registry), and dvc.yaml names it by ${item.model} or ${ssl.method}: the check runs for every
model and method of the registry.
"""
import ast
import functools
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from dvcrepo import REPO
from fewlabels import params, registry

PACKAGES = ("fewlabels", "stages")  # the project's own code; everything else is an installed dependency
# packages of which a stage runs the one module its settings name, and the dvc.yaml variable naming it
CHOSEN = {"fewlabels.models": "item.model", "fewlabels.methods": "ssl.method"}


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The project file that `import name` executes, or None for a name that is not a project module."""
    path = root.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def imported_modules(path: Path) -> frozenset[str]:
    """Project modules named by any import in `path` (and their packages, whose __init__ runs first). A module
    picked by name at run time, `importlib.import_module(f"package.{name}")`, is the package's chosen one (see
    import_closure); the registry's own lookups reach only modules other code also imports, or chosen ones."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif (isinstance(node, ast.Call) and ast.unparse(node.func) == "importlib.import_module"
              and isinstance(node.args[0], ast.JoinedStr) and isinstance(node.args[0].values[0], ast.Constant)):
            package = node.args[0].values[0].value.rstrip(".")
            assert package in CHOSEN, f"{path}: a module of {package} picked by name: add it to CHOSEN"
            names.add(package)
    parents = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}
    return frozenset(n for n in names | parents if n.split(".")[0] in PACKAGES and module_file(n))


def import_closure(module: str, chosen: dict[str, str], root: Path = REPO) -> set[str]:
    """Every project file `python -m <module>` imports, directly or not, as paths relative to `root`, when
    its settings choose `chosen` ({dvc.yaml variable: name}, e.g. {"item.model": "cnn"}): a package of
    CHOSEN that the stage imports brings the module of the chosen name."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        path = module_file(name, root)
        if path not in seen:
            seen.add(path)
            todo += imported_modules(path)
            if name in CHOSEN:
                todo.append(f"{name}.{chosen[CHOSEN[name]]}")
    return {str(p.relative_to(root)) for p in seen}


def stages(dvc_yaml: dict) -> dict[str, dict]:
    return dvc_yaml["stages"]


def stage_module(stage: dict) -> str:
    [module] = re.findall(r"python -m ([\w.]+)", stage["cmd"])
    return module


def render(dep: str, chosen: dict[str, str]) -> str:
    """A dep as DVC renders it for these choices: fewlabels/models/${item.model}.py -> fewlabels/models/cnn.py."""
    return re.sub(r"\$\{([\w.]+)\}", lambda m: chosen[m[1]], dep)


def code_deps(stage: dict, chosen: dict[str, str]) -> set[str]:
    return {render(d, chosen) for d in stage["deps"] if d.endswith(".py")}


EVERY_CHOICE = [{"item.model": model, "ssl.method": method} for model in registry.MODELS for method in registry.METHODS]
DEFAULT = {"item.model": "cnn", "ssl.method": "skip"}


def mismatches(dvc_yaml: dict, choices=EVERY_CHOICE) -> dict[str, dict[str, set[str]]]:
    """{stage: {'missing': imported but not a dep, 'extra': a dep but not imported}} for every stage off, for
    any model and method."""
    out = {}
    for name, stage in stages(dvc_yaml).items():
        for chosen in choices:
            imported, declared = import_closure(stage_module(stage), chosen), code_deps(stage, chosen)
            if imported != declared:
                out[name] = {"missing": imported - declared, "extra": declared - imported}
                break
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
    assert "fewlabels/augment.py" in import_closure("stages.train", DEFAULT)


def test_a_model_or_method_file_is_imported_by_its_own_stages_only():
    """What dvc.yaml's templated deps rest on: train@bn_cnn with ssl.method skip runs bn_cnn.py and skip.py and
    no other model or method, and the data stages run none at all (so editing one reruns no data stage)."""
    closure = import_closure("stages.train", {"item.model": "bn_cnn", "ssl.method": "skip"})
    assert {f for f in closure if f.startswith(("fewlabels/models/", "fewlabels/methods/"))} == {
        "fewlabels/models/__init__.py", "fewlabels/models/layers.py", "fewlabels/models/bn_cnn.py",
        "fewlabels/methods/__init__.py", "fewlabels/methods/base.py", "fewlabels/methods/skip.py"}
    for stage in ("download", "unpack", "split", "index"):
        closure = import_closure(f"stages.{stage}", DEFAULT)
        assert not {f for f in closure if f.startswith(("fewlabels/models", "fewlabels/methods"))}, stage


def every_declared_code_dep(dvc_yaml=YAML(typ="safe", pure=True).load(REPO / "dvc.yaml")):
    return [(name, dep) for name, stage in stages(dvc_yaml).items() for dep in stage["deps"] if dep.endswith(".py")]


@pytest.mark.parametrize("stage, dep", every_declared_code_dep())
def test_dropping_any_code_dep_is_caught(dvc_yaml, stage, dep):
    """The check is not vacuous: with any one import missing from dvc.yaml it reports that stage and file."""
    broken = {"stages": {name: dict(s) for name, s in stages(dvc_yaml).items()}}
    broken["stages"][stage]["deps"] = [d for d in broken["stages"][stage]["deps"] if d != dep]
    assert mismatches(broken, [DEFAULT]) == {stage: {"missing": {render(dep, DEFAULT)}, "extra": set()}}


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
