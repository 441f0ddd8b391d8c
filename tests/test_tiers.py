"""The test tiers (docs/testing.md), read from the tests' source: every test that runs pipelines, a browser or an
installer carries its marker, so that the fast tier never runs one by accident."""
import ast
import configparser
from pathlib import Path

TESTS = Path(__file__).resolve().parent
#: What a test's source shows that it does, and the marker that must say so.
SIGNS = {"install": ('"pip"', "'pip'", "bdist_wheel", "build_meta", "sdist"),
         "browser": ("webdriver", "selenium")}


def marks(decorators: list) -> set:
    """The names of ``pytest.mark.NAME`` among decorators or a ``pytestmark`` value (one mark or a list)."""
    found = set()
    for node in decorators:
        for part in ast.walk(node):
            if isinstance(part, ast.Attribute) and isinstance(part.value, ast.Attribute) and \
                    part.value.attr == "mark":
                found.add(part.attr)
    return found


def module_marks(tree: ast.Module) -> set:
    values = [node.value for node in tree.body if isinstance(node, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)]
    return marks(values)


def functions_of(path: Path):
    """``(name, marks, source)`` of every test function of a module, its module's marks included."""
    text = path.read_text()
    tree = ast.parse(text)
    shared = module_marks(tree)
    helpers = {node.name: ast.get_source_segment(text, node) for node in tree.body
               if isinstance(node, ast.FunctionDef) and not node.name.startswith("test_")}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            source = ast.get_source_segment(text, node)
            # a helper or fixture of the module that it calls does the work on its behalf
            source += "".join(body for name, body in helpers.items() if name in source)
            yield node.name, shared | marks(node.decorator_list), source


def test_every_pipeline_module_is_marked_pipeline():
    unmarked = [path.name for path in sorted((TESTS / "pipelines").glob("test_*.py"))
                if "pipeline" not in module_marks(ast.parse(path.read_text()))]
    assert unmarked == [], "add `pytestmark = pytest.mark.pipeline` to these"


def test_installs_and_browsers_are_marked():
    missing = [f"{path.relative_to(TESTS)}::{name} needs @pytest.mark.{mark}"
               for path in sorted(TESTS.rglob("test_*.py")) for name, found, source in functions_of(path)
               for mark, signs in SIGNS.items() if mark not in found and any(s in source for s in signs)]
    assert missing == []


def test_the_markers_are_registered_and_strict():
    config = configparser.ConfigParser()
    config.read(TESTS.parent / "setup.cfg")
    section = config["tool:pytest"]
    registered = {line.split(":")[0].strip() for line in section["markers"].strip().splitlines()}
    assert registered == {"slow", "pipeline", "browser", "install"}
    assert "--strict-markers" in section["addopts"]


def test_the_sign_reader_finds_marks_and_signs():
    tree = ast.parse("import pytest\npytestmark = [pytest.mark.pipeline, pytest.mark.slow]\n"
                     "@pytest.mark.install\ndef test_a():\n    run(command)\n")
    assert module_marks(tree) == {"pipeline", "slow"}
    assert marks(tree.body[2].decorator_list) == {"install"}


def test_the_readme_and_the_testing_page_name_the_same_fast_tier():
    """The fast tier a newcomer copies from the README is the one docs/testing.md describes."""
    fast = '-m "not slow and not pipeline and not browser and not install"'
    for page in ("README.md", "docs/testing.md"):
        assert fast in (TESTS.parent / page).read_text(), f"{page} does not name the fast tier"
