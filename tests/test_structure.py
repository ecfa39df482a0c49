"""The code's shape is checked, not hoped for: the layers of docs/architecture.md from the
imports (no circle, no import against the direction, no package importing an entry point,
scripts and the Hydra plugin included), few loose modules and no twin names, inference that
never loads the training code, and modules and a training loop of a readable size."""

import ast
import graphlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "retina"
MAX_MODULE_LINES = 400
MAX_TRAIN_LINES = 150
MAX_LOOSE_MODULES = 12

# The layers of docs/architecture.md, as units: a package of retina/ or a loose module.
ENTRY_POINTS = {"train", "evaluate", "predict", "export", "explain", "checkpoints", "sweep"}
# The foundations and what each may import (besides the libraries).
FOUNDATIONS = {
    "errors": set(),
    "files": set(),
    "icdr": set(),
    "retina": set(),  # the package's own __init__
    "config": {"errors"},
    "console": {"errors", "retina"},
    "run_dir": {"config", "errors", "files"},
}
LOWER = {"inference", "quality", "data", "models", "checkpoint", "metrics"}
# Each package and the packages it may import, besides the foundations: jobs, then the layers
# below them. Nothing here may import an entry point.
ALLOWED = {
    "training": {"evaluation"} | LOWER,
    "evaluation": {"uncertainty", "explanations", "reports"} | LOWER,
    "serving": {"uncertainty", "explanations", "reports"} | LOWER,
    "reports": {"uncertainty", "quality", "data", "models", "checkpoint", "metrics"},
    "uncertainty": LOWER,
    "explanations": LOWER,
    "inference": LOWER - {"inference"},
    "quality": LOWER - {"inference", "quality"},
    "checkpoint": {"models"},
    "data": set(),
    "models": set(),
    "metrics": set(),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    _module_name(path): path
    for folder in ("retina", "hydra_plugins", "scripts")
    for path in sorted((ROOT / folder).rglob("*.py"))
}
# scripts/ puts itself on sys.path: its modules import each other by their short names.
SCRIPT_NAMES = {
    name.removeprefix("scripts."): name for name in MODULES if name.startswith("scripts.")
}


def _resolve(name: str) -> str | None:
    if name in MODULES:
        return name
    return SCRIPT_NAMES.get(name)


def _imported(node: ast.AST, importer: str) -> list[str]:
    """The project modules one import statement names (``from X import Y`` names the module
    ``X.Y`` when there is one, else ``X``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: resolved against the importing package
        anchor = importer.rsplit(".", node.level)[0]
        base = f"{anchor}.{base}" if base else anchor
    return [
        f"{base}.{alias.name}" if _resolve(f"{base}.{alias.name}") else base for alias in node.names
    ]


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source (functions included).
    A package importing its own submodules is left out: that is how a package exposes them."""
    graph = {}
    for name, path in MODULES.items():
        is_package = path.name == "__init__.py"
        targets = {
            resolved
            for node in ast.walk(ast.parse(path.read_text()))
            for target in _imported(node, name)
            if (resolved := _resolve(target)) and resolved != name
        }
        graph[name] = {t for t in targets if not (is_package and t.startswith(f"{name}."))}
    return graph


def unit(module: str) -> str:
    """The layer unit of a module: ``retina.evaluation.held_out`` -> ``evaluation``;
    ``retina.run_dir`` -> ``run_dir``; scripts and the Hydra plugin are units of their own."""
    parts = module.split(".")
    if parts[0] != "retina":
        return parts[0]
    return parts[1] if len(parts) > 1 else "retina"


def unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for module, targets in graph.items():
        units.setdefault(unit(module), set()).update(
            unit(t) for t in targets if unit(t) != unit(module)
        )
    return units


def direction_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import against the stated direction, as 'importer -> imported'."""
    found = []
    for module, targets in sorted(graph.items()):
        source = unit(module)
        for target in sorted(targets):
            goal = unit(target)
            if goal == source:
                continue
            if goal in ENTRY_POINTS and target == f"retina.{goal}":
                found.append(f"{module} -> {target} (an entry point)")
            elif goal == "scripts" and source != "scripts":
                found.append(f"{module} -> {target} (only scripts import scripts)")
            elif goal == "hydra_plugins" and source not in ENTRY_POINTS | {"hydra_plugins"}:
                found.append(f"{module} -> {target} (only entry points import the plugin)")
            elif source in FOUNDATIONS and goal not in FOUNDATIONS[source]:
                found.append(
                    f"{module} -> {target} (a foundation imports only {FOUNDATIONS[source]})"
                )
            elif source in ALLOWED and goal not in ALLOWED[source] | set(FOUNDATIONS):
                found.append(
                    f"{module} -> {target} ({source} may import {sorted(ALLOWED[source])})"
                )
    return found


def cycle(graph: dict[str, set[str]]) -> list[str]:
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        return error.args[1]
    return []


def test_the_import_graph_has_no_cycle_scripts_and_plugin_included():
    graph = import_graph()
    assert sum(len(targets) for targets in graph.values()) > 150, "the parser found the imports"
    assert any(unit(m) == "scripts" and targets for m, targets in graph.items())
    assert cycle(graph) == [], f"import cycle: {' -> '.join(cycle(graph))}"
    packages = unit_graph(graph)
    assert cycle(packages) == [], f"package cycle: {' -> '.join(cycle(packages))}"


def test_every_import_follows_the_layers_of_the_architecture():
    assert direction_violations(import_graph()) == []


def test_the_checks_would_find_a_cycle_and_an_import_against_the_direction():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}})
    wrong = {
        "retina.metrics.rates": {"retina.evaluation.held_out"},  # metrics imports a job
        "retina.data.cache": {"retina.training.loop"},  # data imports training
        "retina.reports.figures": {"retina.evaluate"},  # a package imports an entry point
        "retina.run_dir": {"retina.data.cache"},  # a foundation imports a layer above
        "retina.uncertainty.sampling": {"retina.serving.unlabeled"},  # job -> later job
        "retina.files": {"scripts.benchmark"},
    }
    assert len(direction_violations(wrong)) == len(wrong)


def test_few_modules_are_loose_in_the_package_and_none_are_twins():
    """At most 12 modules beside the packages, and no module whose name is an entry
    point's with another ending (evaluate/evaluation, predict/prediction, sweep/sweeps)."""
    loose = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert len(loose) <= MAX_LOOSE_MODULES, loose
    assert ENTRY_POINTS <= set(loose)
    modules = [p.stem for p in PACKAGE.rglob("*.py") if p.stem != "__init__"]
    twins = sorted(
        (entry, name) for entry in ENTRY_POINTS for name in modules if is_twin(entry, name)
    )
    assert twins == []


def is_twin(entry: str, name: str) -> bool:
    """``name`` is ``entry`` with another ending: they share all of the shorter name but
    for its last letter (evaluate/evaluation, export/exporting, sweep/sweeps)."""
    if name == entry:
        return False
    shorter = min(len(entry), len(name))
    return len(os.path.commonprefix([entry, name])) >= max(shorter - 1, 4)


@pytest.mark.parametrize(
    "entry, name, twin",
    [
        ("evaluate", "evaluation", True),
        ("predict", "prediction", True),
        ("export", "exporting", True),
        ("explain", "explaining", True),
        ("sweep", "sweeps", True),
        ("checkpoints", "checkpoint_table", True),
        ("evaluate", "held_out", False),
        ("explain", "overlays", False),
        ("train", "loop", False),
    ],
)
def test_twin_names_are_told_apart(entry, name, twin):
    assert is_twin(entry, name) == twin


def test_inference_and_the_lower_layers_never_import_training_or_sweeps():
    graph = import_graph()
    lower = [
        name
        for name in graph
        if unit(name) in LOWER | {"serving", "evaluation", "reports", "uncertainty"}
        or name == "retina.console"
    ]
    assert len(lower) > 40
    for name in lower:
        bad = {t for t in graph[name] if unit(t) in ("training", "sweep")}
        assert not bad, f"{name} imports {bad}"


def test_no_module_is_over_the_size_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_train_reads_top_to_bottom_in_at_most_150_lines():
    source = (PACKAGE / "training" / "loop.py").read_text()
    train = next(
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef) and node.name == "train"
    )
    assert train.end_lineno - train.lineno + 1 <= MAX_TRAIN_LINES
    comments = [line.strip() for line in ast.get_source_segment(source, train).splitlines()]
    sections = [line for line in comments if line.startswith("# ---")]
    assert len(sections) >= 4, sections


EVALUATE_PREDICT_EXPORT = """
import json, sys
import retina.evaluate, retina.export, retina.predict  # the Hydra entry points themselves
from retina.evaluation.held_out import evaluate_run
from retina.serving.artifacts import export_run
from retina.serving.unlabeled import predict_scans
run, scans, out = sys.argv[1:4]
evaluate_run(run, n_resamples=20)
predict_scans(run, scans, output_dir=out + "/predict")
export_run(run, "keras", output_dir=out + "/export")
loaded = sorted(m for m in sys.modules if m.startswith(("retina.training", "retina.sweep")))
print("LOADED " + json.dumps(loaded))
"""


def test_evaluate_predict_and_export_load_no_training_code(smoke_run, shared_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    scans = tmp_path / "scans"
    scans.mkdir()
    for path in sorted((shared_data / "synthetic" / "train_images").glob("*.png"))[:3]:
        shutil.copy(path, scans / path.name)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EVALUATE_PREDICT_EXPORT), run, scans, tmp_path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("LOADED "))
    assert json.loads(line.removeprefix("LOADED ")) == []
    assert (tmp_path / "predict" / "predictions.csv").is_file()
    assert (tmp_path / "export" / "model.keras").is_file()
