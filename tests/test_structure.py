"""The code's shape is checked, not hoped for: no import cycle, inference that never loads
the training code, and modules and a training loop of a readable size."""

import ast
import graphlib
import json
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


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


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
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
        for alias in node.names
    ]


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source (functions included).
    A package importing its own submodules is left out: that is how a package exposes them."""
    graph = {}
    for name, path in MODULES.items():
        is_package = path.name == "__init__.py"
        targets = {
            target
            for node in ast.walk(ast.parse(path.read_text()))
            for target in _imported(node, name)
            if target in MODULES and target != name
        }
        graph[name] = {t for t in targets if not (is_package and t.startswith(f"{name}."))}
    return graph


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert sum(len(targets) for targets in graph.values()) > 100, "the parser found the imports"
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_a_cycle_would_be_found():
    """The check above can fail: the same sorter on a graph with a known cycle."""
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter({"a": {"b"}, "b": {"c"}, "c": {"a"}}).static_order())


def test_inference_and_the_lower_layers_never_import_training_or_sweeps():
    graph = import_graph()
    lower = [
        name
        for name in graph
        if name.startswith(("retina.inference", "retina.checkpoint", "retina.metrics"))
        or name in ("retina.evaluation", "retina.prediction", "retina.exporting", "retina.cli")
    ]
    for name in lower:
        bad = {t for t in graph[name] if t.startswith(("retina.training", "retina.sweep"))}
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
from retina.evaluation import evaluate_run
from retina.exporting import export_run
from retina.prediction import predict_scans
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
