"""The documentation site builds strictly, its CLI reference covers every command, and no link is dead."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ("01_quickstart", "02_meta_sparsity", "03_unseen_tasks", "04_custom_task")
CLIS = ("l2sparse.adapt", "l2sparse.meta_train", "l2sparse.train", "l2sparse.lomt", "l2sparse.tasks.__main__")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def build(root: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = build(ROOT, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def options(module: str) -> set[str]:
    """Long options as ``--help`` prints them."""
    help_text = subprocess.run(
        [sys.executable, "-m", module.removesuffix(".__main__"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", help_text))


@pytest.mark.parametrize("module", CLIS)
def test_cli_reference_lists_every_option_of_every_command(site, module):
    page = (site / "cli" / "index.html").read_text()
    found = options(module)
    assert "--out" in found or module.endswith("__main__")
    missing = sorted(o for o in found if o not in page)
    assert not missing, f"{module}: options missing from the CLI reference: {missing}"


def test_api_reference_renders_the_docstrings_of_every_subpackage(site):
    sparsity = (site / "api" / "sparsity" / "index.html").read_text()
    assert "Apply the group soft-threshold with step" in sparsity  # prox's docstring
    for page, module in [
        ("models", "create_model"),
        ("meta", "MetaSparsity"),
        ("tasks", "load_registry"),
        ("adapt", "register_init"),
    ]:
        assert module in (site / "api" / page / "index.html").read_text()


def test_a_dead_link_fails_the_build(tmp_path):
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    with (tmp_path / "docs" / "concepts.md").open("a") as f:
        f.write("\nSee [the missing page](no_such_page.md) and [a missing anchor](tasks.md#no-such-heading).\n")
    result = build(tmp_path, tmp_path / "site")
    assert result.returncode != 0
    assert "no_such_page.md" in result.stderr and "#no-such-heading" in result.stderr


def relative_links(path: Path, text: str) -> list[tuple[Path, str]]:
    return [(path, t.split("#")[0]) for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and t[0] != "#"]


def test_readme_and_notebook_links_point_to_files():
    links = relative_links(ROOT / "README.md", (ROOT / "README.md").read_text())
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        links += [
            link for c in cells if c["cell_type"] == "markdown" for link in relative_links(nb, "".join(c["source"]))
        ]
    assert links
    dead = [f"{src.name}: {target}" for src, target in links if not (src.parent / target).exists()]
    assert not dead, dead


def test_every_tutorial_exists_without_outputs_and_is_listed():
    listed = (ROOT / "docs" / "tutorials.md").read_text()
    stored = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert set(TUTORIALS) <= set(stored)
    for name in stored:
        assert f"`{name}.ipynb`" in listed, f"docs/tutorials.md does not list {name}.ipynb"
        cells = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code and all(not c["outputs"] and c["execution_count"] is None for c in code), name
