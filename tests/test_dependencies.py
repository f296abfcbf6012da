"""The package's declared dependencies against what its modules import.

The core (``pml_regularizers`` outside ``bench``) must import with torch, PML and zuko alone; the
benchmark runner needs the ``bench`` extra, and the natural-image modules the ``vision`` extra
too. Checked three ways: statically (every import statement against pyproject.toml), in a
subprocess where the extras cannot be imported, and in a virtual environment that holds only the
core distributions.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pml_regularizers.bench.extras import BENCH_INSTALL, BENCH_MODULES

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pml_regularizers"
SMOKE = Path(__file__).with_name("core_smoke.py")
# The modules of the bench that import the vision extra's packages (lazily, with a message that
# names the extra when they are missing).
VISION_MODULES = frozenset(
    {"bench/models/library_trunks.py", "bench/models/weights_file.py", "bench/data/transforms.py"}
)
# Import name -> distribution, for every third-party module the package imports (and a few it may),
# written out here rather than taken from extras.BENCH_MODULES, which the tests check against it.
DISTRIBUTION_OF = {
    "faiss": "faiss-cpu",
    "hydra": "hydra-core",
    "hydra_plugins.hydra_joblib_launcher": "hydra-joblib-launcher",
    "matplotlib": "matplotlib",
    "numpy": "numpy",
    "omegaconf": "omegaconf",
    "optuna": "optuna",
    "psycopg2": "psycopg2-binary",
    "PIL": "pillow",
    "pytorch_metric_learning": "pytorch-metric-learning",
    "record_keeper": "record-keeper",
    "safetensors": "safetensors",
    "scipy": "scipy",
    "simplejpeg": "simplejpeg",
    "sklearn": "scikit-learn",
    "sqlalchemy": "sqlalchemy",
    "tensorboard": "tensorboard",
    "timm": "timm",
    "torch": "torch",
    "torchvision": "torchvision",
    "tqdm": "tqdm",
    "yaml": "pyyaml",
    "zuko": "zuko",
}
# A core dependency that only the bench imports: numpy comes with PML and zuko anyway, and the core
# list keeps its lower bound for everyone.
CORE_FOR_THE_BENCH = frozenset({"numpy"})
# Bench distributions the runner uses through PML rather than by importing them: each chain starts
# with a PML module a bench module imports, and each module of it imports the next.
# Bench distributions that Hydra loads as plugins because the config names them: (module, the line).
THROUGH_HYDRA = {"hydra-joblib-launcher": ("hydra_plugins.hydra_joblib_launcher", "override hydra/launcher: joblib")}
THROUGH_PML = {
    "record-keeper": ("pytorch_metric_learning.utils.logging_presets", "record_keeper"),
    "tensorboard": ("pytorch_metric_learning.utils.logging_presets", "torch.utils.tensorboard"),
    "faiss-cpu": (
        "pytorch_metric_learning.utils.accuracy_calculator",
        "pytorch_metric_learning.utils.inference",
        "faiss",
    ),
}


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"cannot read the requirement {requirement!r}"
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _declared() -> dict[str, set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"core": project["dependencies"], **project["optional-dependencies"]}
    return {group: {_requirement_name(r) for r in requirements} for group, requirements in groups.items()}


def _imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of the modules ``path`` imports (``from a import b`` gives ``a`` and
    ``a.b``), at any depth of the file, with relative imports resolved against ``package``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parent = package.rsplit(".", node.level - 1)[0] if node.level else ""
            base = ".".join(part for part in (parent, node.module or "") if part)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _package_imports() -> dict[str, set[str]]:
    """Relative file path -> the third-party top-level modules it imports."""
    third_party = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
        tops = {name.partition(".")[0] for name in _imported_modules(path, package)}
        tops -= set(sys.stdlib_module_names) | {"__future__", "pml_regularizers"}
        third_party[path.relative_to(PACKAGE).as_posix()] = tops
    return third_party


def test_the_import_scan_reads_every_form_of_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os.path\nfrom a.b import c\nfrom . import d\nfrom ..e import f\ndef g():\n    import h\n")
    assert _imported_modules(source, "pkg.sub") == {
        "os.path",
        "a.b",
        "a.b.c",
        "pkg.sub",
        "pkg.sub.d",
        "pkg.e",
        "pkg.e.f",
        "h",
    }


def test_every_third_party_import_is_declared_in_the_right_group():
    declared = _declared()
    imports = _package_imports()
    unmapped = {name for tops in imports.values() for name in tops} - set(DISTRIBUTION_OF)
    assert not unmapped, f"add the distribution of {sorted(unmapped)} to DISTRIBUTION_OF"
    for file, tops in imports.items():
        needed = {DISTRIBUTION_OF[name] for name in tops}
        if not file.startswith("bench/"):
            allowed = declared["core"]
        elif file in VISION_MODULES:
            allowed = declared["core"] | declared["bench"] | declared["vision"]
        else:
            allowed = declared["core"] | declared["bench"]
        assert needed <= allowed, f"{file} imports {sorted(needed - allowed)}, not declared for it"


def test_no_declared_dependency_is_unused():
    declared = _declared()
    imports = _package_imports()
    used_by = {
        "core": {DISTRIBUTION_OF[n] for f, tops in imports.items() if not f.startswith("bench/") for n in tops}
        | CORE_FOR_THE_BENCH,
        "bench": {DISTRIBUTION_OF[n] for f, tops in imports.items() if f.startswith("bench/") for n in tops}
        | set(THROUGH_PML)
        | set(THROUGH_HYDRA),
        "vision": {DISTRIBUTION_OF[n] for f, tops in imports.items() if f in VISION_MODULES for n in tops},
    }
    for group, used in used_by.items():
        unused = sorted(declared[group] - used)
        assert not unused, f"{group} declares {unused}, which none of its modules uses"


def test_the_hydra_plugins_are_named_by_the_config():
    config = (PACKAGE / "bench" / "conf" / "config.yaml").read_text()
    for distribution, (module, override) in THROUGH_HYDRA.items():
        assert importlib.util.find_spec(module) is not None, distribution
        assert override in config, f"the config no longer uses {distribution}"


def test_the_dependencies_used_through_pml_are_imported_along_the_chain():
    bench_imports = set()
    for path in (PACKAGE / "bench").rglob("*.py"):
        package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
        bench_imports |= _imported_modules(path, package)
    for distribution, chain in THROUGH_PML.items():
        assert chain[0] in bench_imports, f"no bench module imports {chain[0]} (for {distribution})"
        for module, imported in itertools.pairwise(chain):
            spec = importlib.util.find_spec(module)
            assert spec is not None and spec.origin, module
            assert imported in _imported_modules(Path(spec.origin), module.rpartition(".")[0]), (
                f"{module} no longer imports {imported}; is {distribution} still needed?"
            )


def test_the_cli_check_covers_exactly_the_bench_extra():
    declared = _declared()
    assert set(BENCH_MODULES.values()) == declared["bench"], "extras.BENCH_MODULES differs from the bench extra"
    for name, distribution in BENCH_MODULES.items():
        assert DISTRIBUTION_OF[name] == distribution


def test_the_core_dependencies_are_torch_pml_zuko_and_numpy():
    core = _declared()["core"]
    assert core == {"torch", "numpy", "pytorch-metric-learning", "zuko"}, sorted(core)


def _run(python: str | Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), str(SMOKE), *args], capture_output=True, text=True, timeout=600, cwd=REPO)


def _assert_core_ran(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    modules = done.stdout.strip().splitlines()[-1].removeprefix("core ok: ").split(",")
    assert {"pml_regularizers", "pml_regularizers.functional", "pml_regularizers.trainers.dvml_trainer"} <= set(modules)
    assert not any(name.startswith("pml_regularizers.bench") for name in modules)


def _assert_install_hint(done: subprocess.CompletedProcess, missing: list[str]) -> None:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("pml-bench: error: the benchmark runner needs the bench extra")
    assert lines[0].endswith(BENCH_INSTALL)
    assert f"(missing: {', '.join(missing)});" in lines[0]


@pytest.mark.slow
def test_the_core_works_when_the_extras_cannot_be_imported():
    _assert_core_ran(_run(sys.executable, "--refuse-extras"))


@pytest.mark.slow
def test_pml_bench_without_the_bench_extra_says_what_to_install():
    done = _run(sys.executable, "--refuse-extras", "--cli")
    refused = ["hydra-core", "omegaconf", "record-keeper", "tensorboard", "faiss-cpu", "pillow", "matplotlib"]
    _assert_install_hint(done, refused)


def _closure(requirements: list[str]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions that ``requirements`` need, with their own needs (extras
    followed where a requirement names them; requirements not installed here are left out)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = _requirement_name(requirement)
        extras = set(re.findall(r"[A-Za-z0-9._-]+", requirement.partition("[")[2].partition("]")[0]))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in found:
            continue
        found[key] = dist
        for needed in dist.requires or []:
            marker = needed.partition(";")[2]
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if extra is None or extra.group(1) in extras:
                todo.append(needed.partition(";")[0])
    return found


@pytest.mark.slow
def test_the_core_in_a_virtual_environment_without_the_extras(tmp_path):
    venv = pytest.importorskip("venv", reason="the venv module is not available")
    root = tmp_path / "lean"
    venv.create(root, with_pip=False, symlinks=True)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    links = tmp_path / "core-distributions"
    links.mkdir()
    for dist in _closure(sorted(_declared()["core"])).values():
        for file in dist.files or []:
            top = file.parts[0]
            if top == ".." or top == "__pycache__" or (links / top).exists():
                continue
            (links / top).symlink_to(Path(dist.locate_file(top)))
    (site / "core.pth").write_text(f"{links}\n{REPO}\n")

    probe = (
        "import importlib.util as u\n"
        "def found(m):\n"
        "    try:\n"
        "        return u.find_spec(m) is not None\n"
        "    except ImportError:  # a sub-module of a missing package\n"
        "        return False\n"
        "print([m for m in {!r} if found(m)])"
    )
    extras = [name for name in BENCH_MODULES if name != "scipy"] + ["torchvision", "timm", "safetensors"]
    present = subprocess.run(
        [str(python), "-c", probe.format(extras)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert present == "[]", f"the lean environment has {present}"
    _assert_core_ran(_run(python))
    missing = [BENCH_MODULES[name] for name in BENCH_MODULES if name != "scipy"]
    _assert_install_hint(_run(python, "--cli"), missing)
