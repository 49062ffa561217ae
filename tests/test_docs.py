"""The README and docs/ point at things that exist: pages, modules the commands run, benchmark
scripts and gin files. A rename that leaves a page behind fails here, not in a user's shell."""
import glob
import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def _text(page):
    with open(page, encoding="utf-8") as f:
        return f.read()


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_every_link_and_path_a_page_names_exists(page):
    text, here = _text(page), os.path.dirname(page)
    links = [target for target in re.findall(r"\]\(([\w./-]+)\)", text) if "://" not in target]
    missing = [t for t in links if not os.path.exists(os.path.join(here, t))]
    paths = set(re.findall(r"\b((?:benchmarks|gin_configs|trainer|data_pipeline|launch|tests|docs)"
                           r"/[a-z0-9_/.-]+\.(?:py|gin|md))", text))  # not placeholders: X.gin
    missing += [p for p in paths if not os.path.exists(os.path.join(ROOT, p))]
    assert not missing, f"{page} names what does not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_every_module_a_command_runs_exists(page):
    modules = set(re.findall(r"python3? -m ((?:trainer|data_pipeline|launch)[\w.]*)", _text(page)))
    assert not [m for m in modules if importlib.util.find_spec(m) is None], modules


def test_the_readme_reads_in_ten_minutes():
    assert len(_text(PAGES[0]).splitlines()) <= 200  # the rest belongs in docs/
