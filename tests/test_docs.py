"""The documentation: the site builds with `mkdocs build --strict` (a broken link, anchor or API
reference fails), every page is reachable from the navigation, and the README stays short."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200


def nav_pages(nav) -> set[str]:
    pages: set[str] = set()
    for item in nav:
        if isinstance(item, str):
            pages.add(item)
        elif isinstance(item, dict):
            for value in item.values():
                pages |= nav_pages(value) if isinstance(value, list) else {value}
    return pages


def test_the_site_builds_strictly(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "edge_runtime.sysmodel" / "index.html").read_text()
    assert "allocate_rsu" in api  # the API pages hold the docstrings, not only headings


def test_every_page_is_in_the_navigation():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages == nav_pages(config["nav"])


def test_the_readme_is_an_entry_point_not_a_manual():
    assert len((ROOT / "README.md").read_text().splitlines()) <= README_MAX_LINES
