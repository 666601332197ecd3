"""The import rule of docs/INTERNALS.md, read from the source with `ast` (nothing is imported):
packages follow the data flow `data -> model -> losses -> train -> eval -> search` and import only
from their left plus the shared top-level modules; commands own the command line."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "partsearch"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
ORDER = ("data", "model", "losses", "train", "eval", "search")
SHARED = {"config", "errors", "hub", "files", "device", "runs", "progress"}
# Benchmarks that time or drive training itself; every other benchmark reads runs through `partsearch.runs`.
TRAINING_BENCHMARKS = {"train_step.py", "ablation.py", "step_profile.py"}  # they time or run the trainer


def imported(path: Path, package: str | None = None) -> set[str]:
    """Every module name `path` imports (absolute, `partsearch...` or third party), lazy and relative
    imports included; `package` is the module's package (default: from where it lies under src/)."""
    names: set[str] = set()
    if package is None:
        package = ".".join(("partsearch", *path.relative_to(SRC).parent.parts)) if SRC in path.parents else ""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


def partsearch_parts(path: Path, package: str | None = None) -> set[str]:
    """The top-level parts of partsearch that `path` imports (`eval`, `runs`, ...)."""
    return {name.split(".")[1] for name in imported(path, package) if name.startswith("partsearch.")}


def modules(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((SRC / folder).rglob("*.py"))]


def test_the_rule_reader_sees_lazy_and_relative_imports(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from partsearch.train import engine\n\nfrom ..search import index\n")
    assert partsearch_parts(module, package="partsearch.eval") == {"train", "search"}


def test_each_package_imports_only_from_its_left_and_the_shared_modules():
    wrong = []
    for i, package in enumerate(ORDER):
        allowed = set(ORDER[: i + 1]) | SHARED
        wrong += [f"{p.relative_to(SRC)} imports partsearch.{part}"
                  for p in modules(package) for part in partsearch_parts(p) - allowed]
    assert not wrong


def test_eval_search_and_the_demo_never_import_train():
    paths = modules("eval", "search") + [SRC / "demo.py", SRC / "report.py", SRC / "runs.py"]
    assert not [str(p.relative_to(SRC)) for p in paths if "train" in partsearch_parts(p)]


def test_benchmarks_that_do_not_train_never_import_train():
    paths = [p for p in sorted(BENCHMARKS.glob("*.py")) if p.name not in TRAINING_BENCHMARKS]
    assert not [p.name for p in paths if any(n.startswith("partsearch.train") for n in imported(p))]


def test_library_packages_hold_no_argparse():
    paths = modules(*ORDER) + [SRC / "demo.py", SRC / "report.py", SRC / "runs.py"]
    assert not [str(p.relative_to(SRC)) for p in paths if "argparse" in imported(p)]


def test_library_packages_never_import_the_command_line():
    paths = modules(*ORDER) + [SRC / name for name in ("demo.py", "report.py", "runs.py", *(f"{s}.py" for s in SHARED))]
    assert not [str(p.relative_to(SRC)) for p in paths if partsearch_parts(p) & {"commands", "cli"}]


def test_every_error_class_is_defined_in_the_errors_module():
    def is_error(base: ast.expr) -> bool:
        name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
        return name.endswith(("Error", "Exception")) or name in {"ImageRejected"}

    elsewhere = [f"{p.relative_to(SRC)}:{node.name}" for p in sorted(SRC.rglob("*.py")) if p.name != "errors.py"
                 for node in ast.walk(ast.parse(p.read_text()))
                 if isinstance(node, ast.ClassDef) and any(is_error(b) for b in node.bases)]
    assert not elsewhere
