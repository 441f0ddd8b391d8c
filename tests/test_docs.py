"""The documentation against the code: the Sphinx site builds without a warning, every flag the pages give a
pipeline script exists in that script's --help, the README keeps the shape CI reads (.ci/run) and its Python
quickstart runs."""
import contextlib
import importlib.util
import io
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
SCRIPTS = sorted(p.stem for p in (ROOT / "pipelines").glob("*.py"))
PAGES = sorted(DOCS.glob("**/*.md")) + [README]


def _has_sphinx() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("sphinx", "myst_parser"))


@pytest.mark.slow  # a fresh interpreter that imports TensorFlow, and a whole Sphinx build: about a minute
@pytest.mark.skipif(not _has_sphinx(), reason='sphinx and myst-parser are not installed: pip install -e ".[docs]"')
def test_the_docs_build_with_warnings_as_errors(tmp_path):
    # A fresh interpreter: autodoc imports every module, and Sphinx keeps global state between builds.
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                            str(tmp_path / "html")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    warnings = [line for line in build.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert build.returncode == 0, "\n".join(warnings) or build.stderr[-3000:]
    assert (tmp_path / "html" / "index.html").is_file()


# --------------------------------------------------------------------------
# Flags named in the docs
# --------------------------------------------------------------------------
SCRIPT = re.compile(r"([\w./-]*?)\b(" + "|".join(SCRIPTS) + r")\.py\b")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
TABLE_OF = re.compile(r"^% flags: pipelines/(\w+)\.py\s*$")


def _snippets(text: str) -> list:
    """The code of a page: each command of its code blocks (continued lines joined) and each inline code span."""
    snippets, prose, block = [], [], None
    for line in text.splitlines():
        if line.startswith("```"):  # a fence opens a block, or closes the open one
            if block is not None:
                snippets += block
            block = [] if block is None else None
            continue
        if block is None:
            prose.append(line)
        elif block and block[-1].endswith("\\"):
            block[-1] = block[-1][:-1] + " " + line
        else:
            block.append(line)
    snippets += re.findall(r"`([^`]+)`", "\n".join(prose))
    return snippets


def _flags_in_commands(text: str) -> set:
    """``(script, flag)`` for every flag that follows a pipeline script's name in a command, up to the next
    script, shell separator or the end of the command (``benchmarks/...`` scripts are not pipelines)."""
    found = set()
    for snippet in _snippets(text):
        matches = [m for m in SCRIPT.finditer(snippet) if m.group(1) in ("", "pipelines/")]
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(snippet)
            command = re.split(r"&&|;|\|\||#", snippet[match.end():end])[0]
            found |= {(match.group(2), flag) for flag in FLAG.findall(command)}
    return found


def _flags_in_tables(text: str) -> set:
    """``(script, flag)`` for the first cell of every row of a table marked ``% flags: pipelines/SCRIPT.py``."""
    found, script = set(), None
    for line in text.splitlines():
        marked = TABLE_OF.match(line)
        if marked:
            script = marked.group(1)
        elif script and line.startswith("|"):
            found |= {(script, flag) for flag in FLAG.findall(line.split("|")[1])}
        elif script and not line.startswith("|"):
            script = None
    return found


def _help(script: str) -> str:
    """The --help of pipelines/SCRIPT.py, run in this process (TensorFlow is imported once for all of them)."""
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [f"{script}.py", "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            runpy.run_path(str(ROOT / "pipelines" / f"{script}.py"), run_name="__main__")
    finally:
        sys.argv = argv
    return out.getvalue()


def test_the_flag_finder_reads_commands_and_marked_tables():
    page = ("Run `run_all.py --path relu` or `benchmarks/energy_pareto.py --train 1`.\n\n```bash\n"
            ".venv/bin/python pipelines/train_ann.py --run r \\\n  --levels 4 && ls --color\n```\n\n"
            "% flags: pipelines/fine_tune.py\n| flag | default |\n|---|---|\n| `--recipe snn4space` | none |\n"
            "| `--train-tau` / `--no-train-tau` | off |\n\n| `--not-a-flag-table` | |\n")
    assert _flags_in_commands(page) == {("run_all", "--path"), ("train_ann", "--run"), ("train_ann", "--levels")}
    assert _flags_in_tables(page) == {("fine_tune", "--recipe"), ("fine_tune", "--train-tau"),
                                      ("fine_tune", "--no-train-tau")}


def test_every_flag_the_docs_give_a_pipeline_script_is_in_its_help():
    named = {}
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for script, flag in _flags_in_commands(text) | _flags_in_tables(text):
            named.setdefault(script, {}).setdefault(flag, set()).add(page.relative_to(ROOT).as_posix())
    assert len(named) >= 8, f"the finder found flags of only {sorted(named)}: has the docs' markup changed?"
    stale = []
    for script, flags in sorted(named.items()):
        known = set(FLAG.findall(_help(script)))
        stale += [f"pipelines/{script}.py {flag} (in {', '.join(sorted(pages))})"
                  for flag, pages in sorted(flags.items()) if flag not in known]
    assert not stale, "flags the docs name that the script does not have:\n" + "\n".join(stale)


# --------------------------------------------------------------------------
# The pages and the README
# --------------------------------------------------------------------------
def test_every_benchmark_result_has_a_page_and_every_page_a_result():
    results = {p.stem for p in (ROOT / "benchmarks" / "results").glob("*.md")}
    pages = {p.stem for p in (DOCS / "results").glob("*.md")} - {"index"}
    assert results == pages, "add or remove docs/results/NAME.md, one include of benchmarks/results/NAME.md"


def test_the_readme_is_short_and_its_links_lead_somewhere():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200, "the README is the front page: move details into docs/"
    targets = re.findall(r"\]\(((?!https?:|#)[^)#]+)(?:#[^)]*)?\)", text)
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert targets and not missing, f"the README links to files that do not exist: {missing}"


def test_the_readme_set_up_section_holds_the_two_commands_ci_runs():
    # .ci/run runs the fenced lines of the "## Set up" section and refuses any count but two.
    commands, section, block = [], False, False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line == "## Set up"
        elif section and line.startswith("```"):
            block = not block
        elif section and block:
            commands.append(line)
    assert len(commands) == 2
    assert "pipelines/run_all.py" in commands[0] and "pytest" in commands[1]


def _python_blocks(text: str) -> list:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def _small_model(activation: str):
    """A small classifier, QCFS (so that every line of a quickstart runs, the NIR export too) or ReLU."""
    import tensorflow as tf

    from snn4vision.layers import QCFS

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = QCFS(2, 1.0)(x) if activation == "qcfs" else tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(tf.keras.layers.AveragePooling2D()(x))
    return tf.keras.Model(inputs, tf.keras.layers.Dense(3)(x))


# The Python code of the pages, each block on the model it is written for: the facade's on a QCFS network, the
# step-by-step conversion (which normalises rates) on a ReLU one.
CODE = [("README.md", "snn4vision.convert(", "qcfs"), ("docs/own_model.md", "snn4vision.convert(", "qcfs"),
        ("docs/own_model.md", "layer_graph.build_graph", "relu")]


@pytest.mark.slow  # converts, simulates up to T = 64, prices and exports: over 10 s on 2 cores
@pytest.mark.parametrize("page, marker, activation", CODE)
def test_the_python_code_of_the_pages_runs(page, marker, activation, tmp_path, monkeypatch):
    (code,) = [b for b in _python_blocks((ROOT / page).read_text(encoding="utf-8")) if marker in b]
    rng = np.random.default_rng(0)
    images, labels = rng.random((8, 8, 8, 3), dtype=np.float32), rng.integers(0, 3, 8)
    namespace = {"model": _small_model(activation), "train_images": rng.random((16, 8, 8, 3), dtype=np.float32),
                 "test_images": images, "test_labels": labels, "images": images, "labels": labels}
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page}: the block with {marker}", "exec"), namespace)
    assert "snn" in namespace
    if "export_nir" in code:
        assert (tmp_path / "model.nir").is_file()
