"""The package's architecture, read from its source: stages build on the run module and never on each other, no
import cycles, and no import hidden inside a function."""
import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "snn4vision"
#: The pipeline stages: the modules of the stages/ folder; pipeline.py (which runs them all) and the cli package
#: (the commands) sit above them.
STAGES = {f"stages.{path.stem}" for path in (PACKAGE / "stages").glob("*.py") if path.stem != "__init__"}
#: The Python API (snn4vision.api): the top of the library, below the stages, which may build on it.
API = "api"


def above_stages(module: str) -> bool:
    """The only modules that may import a stage: pipeline, and the cli package's."""
    return module == "pipeline" or module.split(".")[0] == "cli"


def module_name(path: Path) -> str:
    """``convert``, ``events`` (a subpackage's ``__init__.py``), ``events.frames``; the package's own
    ``__init__.py`` is ``__init__``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def package_imports() -> dict:
    """``{module: {(imported module, line, at module level?)}}`` of the imports between snn4vision's modules,
    subpackages' modules included (dotted: ``events.frames``); an import of a name from a package counts as an
    import of that package's ``__init__``."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {}
    for path in paths:
        name = module_name(path)
        is_package = path.name == "__init__.py" and name != "__init__"
        # the package a relative import starts from: a subpackage's __init__ is inside its own package
        package = name.split(".") if is_package else name.split(".")[:-1]
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(node) for node in tree.body}
        edges = set()
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = package[:len(package) - (node.level - 1)]
                if node.module:
                    # from .stages import energy: the module stages.energy; from .errors import UserError: errors
                    prefix = base + node.module.split(".")
                    targets = [prefix + [alias.name] if ".".join(prefix + [alias.name]) in modules else prefix
                               for alias in node.names]
                else:
                    targets = [base + [alias.name] for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name.split(".")[1:] for alias in node.names if alias.name.startswith("snn4vision.")]
            for parts in targets:
                while parts and ".".join(parts) not in modules:  # a name from a package: its __init__
                    parts = parts[:-1]
                edges.add((".".join(parts) or "__init__", node.lineno, id(node) in top_level))
        graph[name] = edges
    return graph


def dependency_order(graph: dict) -> list:
    """The modules, each after every module it imports; fails naming a cycle's modules if there is one."""
    order, done = [], set()
    remaining = {module: {target for target, _, _ in edges if target != module} for module, edges in graph.items()}
    while remaining:
        ready = sorted(m for m, targets in remaining.items() if targets <= done)
        assert ready, f"import cycle among {sorted(remaining)}"
        for module in ready:
            order.append(module)
            done.add(module)
            del remaining[module]
    return order


def test_the_import_graph_reads_real_imports():
    graph = package_imports()
    assert {"rundir", "evaluation", "layer_graph", "simulation"} <= {t for t, _, _ in graph["stages.convert"]}
    assert {"layer_graph", "neurons", "costs", "simulation.stepping"} <= {t for t, _, _ in graph["simulation.network"]}
    # a subpackage: its __init__ imports its modules, which import each other (.x) and the package's (..x)
    assert {"events.recordings", "events.frames", "events.datasets", "events.emulator"} <= {
        t for t, _, _ in graph["events"]}
    assert {"data", "resources", "errors", "events.frames", "events.recordings"} == {
        t for t, _, _ in graph["events.datasets"]}
    assert "events" in {t for t, _, _ in graph["stages.training"]}
    assert "stages.convert" in {t for t, _, _ in graph["pipeline"]}


def test_every_import_is_at_module_level():
    hidden = [f"{module}.py:{line} imports {target}" for module, edges in package_imports().items()
              for target, line, top in edges if not top]
    assert hidden == []


def test_no_import_cycles_and_every_module_imports_in_dependency_order():
    order = dependency_order(package_imports())
    assert order.index("rundir") < min(order.index(stage) for stage in STAGES)
    for module in order:
        importlib.import_module(f"snn4vision.{module}" if module != "__init__" else "snn4vision")


def test_stages_never_import_each_other():
    assert {stage.removeprefix("stages.") for stage in STAGES} == {
        "training", "convert", "fine_tuning", "energy", "predict", "export", "report"}
    crossings = [f"{module} imports {target}" for module, edges in package_imports().items() if module in STAGES
                 for target, _, _ in edges if target in STAGES - {module}]
    assert crossings == []


def test_only_the_pipeline_and_the_commands_import_a_stage():
    """The library below the stages never reaches up into one (stages/__init__ imports none of them either)."""
    reaching_up = [f"{module} imports {target}" for module, edges in package_imports().items()
                   if module not in STAGES and not above_stages(module) for target, _, _ in edges if target in STAGES]
    assert reaching_up == []


def test_the_api_is_a_library_layer_that_stages_build_on():
    graph = package_imports()
    assert {target for target, _, _ in graph[API]} & (STAGES | {"pipeline", "cli"}) == set()
    assert API in {target for target, _, _ in graph["stages.convert"]}


def test_import_snn4vision_leaves_tensorflow_and_the_api_until_first_use():
    """``import snn4vision`` (the tf-keras switch) is light; its API names load snn4vision.api when first used."""
    import subprocess
    import sys

    import snn4vision
    from snn4vision import api

    probe = ("import sys, snn4vision; print('tensorflow' in sys.modules, 'snn4vision.api' in sys.modules, "
             "sorted(set(snn4vision.API) - set(dir(snn4vision))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[0] == "False False []"
    assert [getattr(snn4vision, name) for name in snn4vision.API] == [getattr(api, name) for name in snn4vision.API]


def test_the_cycle_check_finds_a_cycle():
    try:
        dependency_order({"a": {("b", 1, True)}, "b": {("c", 1, True)}, "c": {("a", 1, True)}, "d": set()})
    except AssertionError as error:
        assert "['a', 'b', 'c']" in str(error)
    else:
        raise AssertionError("a cycle went unnoticed")


@pytest.mark.slow  # two fresh interpreters that import TensorFlow: about 5 s
def test_a_pipeline_script_and_its_console_script_run_the_same_command(tmp_path):
    """Both print the same single line (no TensorFlow log noise: the log level is set before it loads) and exit 2."""
    import subprocess
    import sys

    missing = tmp_path / "nothing"
    console_script = Path(sys.executable).parent / "snn4vision-convert-snn"
    expected = [f"error: run directory {missing} does not exist: run pipelines/train_ann.py --run {missing} first"]
    for command in ([str(console_script)], [sys.executable, str(PACKAGE.parent / "pipelines" / "convert_snn.py")]):
        result = subprocess.run([*command, "--run", str(missing)], capture_output=True, text=True, cwd=tmp_path)
        assert (result.returncode, result.stderr.splitlines()) == (2, expected), command


def test_every_planted_bug_still_finds_its_code():
    """tests/mutants.py plants each bug by replacing a piece of source text: after code moves, a piece that is no
    longer in its file exactly once would be skipped ("cannot be planted") and its bug silently go unchecked."""
    spec = importlib.util.spec_from_file_location("mutants", PACKAGE.parent / "tests" / "mutants.py")
    mutants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mutants)
    stale = [(name, path) for name, path, old, _, _ in mutants.MUTANTS
             if not (PACKAGE.parent / path).is_file() or (PACKAGE.parent / path).read_text().count(old) != 1]
    assert not stale, f"mutants whose original text is not in their file exactly once: {stale}"
