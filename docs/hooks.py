"""mkdocs hook: lay out the `splitrt` import namespace for mkdocstrings before it reads the code.

The folders edge_runtime/, models/, policy/ and tools/ install as ``splitrt.<folder>`` (see
pyproject.toml); griffe, which renders the API pages, looks for a ``splitrt/`` directory on its
search paths. This builds ``build/docs-src/splitrt/<folder>`` as symbolic links to the folders,
and drops from ``sys.path`` a directory that holds the ``splitrt`` console script (``mkdocs``
started as a script puts its bin/ there, and griffe would take the script for the namespace).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "build" / "docs-src"
FOLDERS = ("edge_runtime", "models", "policy", "tools")


@event_priority(100)  # before mkdocstrings reads its search paths (a fresh checkout has none yet)
def on_config(config, **kwargs):
    namespace = SOURCE / "splitrt"
    namespace.mkdir(parents=True, exist_ok=True)
    for folder in FOLDERS:
        link = namespace / folder
        if link.is_symlink() and link.resolve() != ROOT / folder:
            link.unlink()
        if not link.exists():
            link.symlink_to(ROOT / folder, target_is_directory=True)
    sys.path[:] = [p for p in sys.path if not (Path(p or ".") / "splitrt").is_file()]
    return config
