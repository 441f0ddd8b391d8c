"""Sphinx configuration of the snn4vision documentation (``python -m sphinx -W -b html docs OUT``)."""
import os
import pkgutil
import shutil
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(DOCS))  # the package itself, also without an install
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up lines are not the build's output

import snn4vision  # noqa: E402  (first: selects tf-keras before autodoc imports anything of TensorFlow)

project = "snn4vision"
author = "snn4vision developers"
copyright = "snn4vision developers"
release = version = snn4vision.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]

# Markdown: ``[text](page.md#a-heading)`` links need slugs for headings; ``$...$`` is not maths in these pages.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# The API reference: one page per module, written at every build from the package as it is (so a module added,
# moved or deleted needs no edit here, and leaves no stale page for -W to fail on).
API_DIR = os.path.join(DOCS, "_api")
shutil.rmtree(API_DIR, ignore_errors=True)
os.makedirs(API_DIR)
MODULES = ["snn4vision"] + sorted(m.name for m in pkgutil.walk_packages(snn4vision.__path__, "snn4vision.")
                                  if not m.name.rpartition(".")[2].startswith("_"))
for module in MODULES:
    with open(os.path.join(API_DIR, module + ".rst"), "w") as page:
        page.write(f"{module}\n{'=' * len(module)}\n\n.. automodule:: {module}\n")

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    # each object once, on the page of the module that defines it (a package's __all__ re-exports it)
    "ignore-module-all": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Keras methods we override (call, get_config) would otherwise bring Keras's own docstrings, in Google style.
autodoc_inherit_docstrings = False
# Type hints name TensorFlow and numpy types that have no documentation here: not cross-referenced (nitpicky off).
nitpicky = False

html_theme = "alabaster"
html_title = "snn4vision"
html_static_path = []
