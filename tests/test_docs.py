"""The documentation stays true to the code.

- Every ``python`` code block of the docs pages and of the README runs: the blocks of one page in
  order, as one script in a fresh folder, so a page works when pasted in order.
- The generated parts of the docs build (``docs/conf.py``): the evidence archive lists the reports
  under ``docs/results/*/report.md`` in their groups (each must name the command that made it), or
  says in one sentence that a group has none; the reports are orphans, so the sidebar does not list
  them; the quickstart lists every example; an unreachable intersphinx inventory is information,
  not a warning.
- A copy of the docs with generated reports builds with ``-W``; no page has an empty section, and
  the method pages' math reaches MathJax.

``make docs`` (run by ``make test``) builds the real pages with ``-W``.
"""

import importlib.util
import logging
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(`{3,})(?:python|py)[ \t]*\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)


def _pages_with_python() -> list[Path]:
    pages = [ROOT / "README.md"]
    for page in sorted(DOCS.rglob("*.md")):
        top = page.relative_to(DOCS).parts[0]
        if top not in ("_build", "results"):  # reports are generated, not written by hand
            pages.append(page)
    return [page for page in pages if FENCE.search(page.read_text(encoding="utf-8"))]


PAGES = _pages_with_python()


def _load_docs_conf():
    spec = importlib.util.spec_from_file_location("docs_conf", DOCS / "conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_quickstart_and_the_method_pages_have_code_to_run():
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    assert {"README.md", "docs/index.md", "docs/quickstart.md", "docs/methods/skewed_mean.md"} <= names


def test_fence_pattern_takes_whole_blocks_only():
    text = "x\n```python\na = 1\n```\n\n````python\nb = 2\n```\nc = 3\n````\n```bash\nls\n```\n"
    assert [m.group(2) for m in FENCE.finditer(text)] == ["a = 1\n", "b = 2\n```\nc = 3\n"]


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
@pytest.mark.slow
def test_python_blocks_of_the_page_run(page, tmp_path):
    blocks = [m.group(2) for m in FENCE.finditer(page.read_text(encoding="utf-8"))]
    script = tmp_path / "page.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{page.name}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def test_a_report_must_name_the_command_that_made_it(tmp_path, monkeypatch):
    conf = _load_docs_conf()
    monkeypatch.setattr(conf, "DOCS", tmp_path)
    for name, text in [
        ("named", "Command: `torchrun --nproc_per_node=2 -m x`"),
        ("typed", "| 0.5 |"),
        ("script", "python -m experiments.evidence_summary"),
        ("other", "python make_up.py"),
    ]:
        (tmp_path / "results" / name).mkdir(parents=True)
        (tmp_path / "results" / name / "report.md").write_text(f"# {name}\n\n{text}\n")
    assert conf.reports_without_command() == ["results/other/report", "results/typed/report"]


def test_every_published_report_names_the_command_that_made_it():
    assert _load_docs_conf().reports_without_command() == []


def _archive_source(conf) -> list[str]:
    return ["# Archive\n\n" + "".join(f"## {g}\n\n{conf._REPORTS_MARKER} {g}\n\n" for g in conf._REPORT_GROUPS)]


def test_archive_without_reports_says_so_in_each_group(tmp_path, monkeypatch):
    conf = _load_docs_conf()
    monkeypatch.setattr(conf, "DOCS", tmp_path)
    source = _archive_source(conf)
    conf._generated_lists(None, conf._ARCHIVE_DOC, source)
    assert source[0].count(conf._NO_RESULTS) == len(conf._REPORT_GROUPS) and "report.md" not in source[0]


def test_archive_lists_each_report_in_its_group_and_reports_are_orphans(tmp_path, monkeypatch):
    conf = _load_docs_conf()
    monkeypatch.setattr(conf, "DOCS", tmp_path)
    reports = {
        "regularizer_check_proxy_anchor-omniglot964-d32": "python -m experiments.regularizer_check --size tiny",
        "skewed_mean_proxy_anchor-omniglot-d32": "python -m experiments.evidence skewed_mean_proxy_anchor",
        "dvml_triplet-glyphs-n10-d32": "python experiments/evidence.py dvml_triplet --per-class 10",
        "skewed_mean_proxy_anchor-folder": "pml-bench study skewed_mean_proxy_anchor dataset=folder",
        "evidence_summary": "python -m experiments.evidence_summary\npython -m experiments.evidence dvml_triplet",
        "skewed_mean_sweep-omniglot-d32": "python -m experiments.skewed_mean_sweep --lr 0.003",
        "dvml_triplet_kl0.1-omniglot-d32": "pml-bench report runs/evidence/dvml_triplet-omniglot-d32-baseline",
        "default-skewed_mean": "pml-bench report runs/compare/glyphs-proxy_anchor-linear",
    }
    for name, command in reports.items():
        (tmp_path / "results" / name).mkdir(parents=True)
        (tmp_path / "results" / name / "report.md").write_text(f"# {name}\n\n```bash\n{command}\n```\n")
    source = _archive_source(conf)
    conf._generated_lists(None, conf._ARCHIVE_DOC, source)
    sections = dict(part.split("\n", 1) for part in source[0].split("## ")[1:])
    listed = {g: re.findall(r"^- \[\]\(results/([^/]+)/report\.md\)", sections[g], re.MULTILINE) for g in sections}
    assert listed == {
        "regularizer_check": ["regularizer_check_proxy_anchor-omniglot964-d32"],
        "evidence": [
            "dvml_triplet-glyphs-n10-d32",
            "evidence_summary",
            "skewed_mean_proxy_anchor-folder",
            "skewed_mean_proxy_anchor-omniglot-d32",
        ],
        "followup": ["dvml_triplet_kl0.1-omniglot-d32", "skewed_mean_sweep-omniglot-d32"],
        "default": ["default-skewed_mean"],
    }
    report = ["# A report\n"]
    conf._generated_lists(None, "results/default-skewed_mean/report", report)
    assert report[0] == "---\norphan: true\n---\n# A report\n"
    page = ["# Results\n"]
    conf._generated_lists(None, "results", page)
    assert page == ["# Results\n"]


class _Sections(HTMLParser):
    """Content of each ``<section>`` of a page outside its heading (text and images), and its
    number of subsections."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[dict] = []
        self.done: list[dict] = []
        self.in_heading = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "section":
            if self.stack:
                self.stack[-1]["children"] += 1
            self.stack.append({"id": dict(attrs).get("id"), "title": "", "text": "", "children": 0})
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.in_heading += 1
        elif tag == "img" and self.stack:
            self.stack[-1]["text"] += "[image]"

    def handle_endtag(self, tag: str) -> None:
        if tag == "section" and self.stack:
            self.done.append(self.stack.pop())
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.in_heading -= 1

    def handle_data(self, data: str) -> None:
        if self.stack:
            self.stack[-1]["title" if self.in_heading else "text"] += data


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory) -> Path:
    """A copy of the docs (and of the examples they list) built with -W like ``make docs``, with a
    stub in place of each real report (the pages link to them) and two generated reports."""
    root = tmp_path_factory.mktemp("docs")
    src = root / "docs"
    shutil.copytree(DOCS, src, ignore=shutil.ignore_patterns("_build"))
    shutil.copytree(ROOT / "examples", root / "examples")
    shutil.rmtree(src / "results", ignore_errors=True)
    for report in DOCS.glob("results/*/report.md"):
        (src / "results" / report.parent.name).mkdir(parents=True)
        (src / "results" / report.parent.name / "report.md").write_text("# A report\n\nMade by `pml-bench compare`.\n")
    for name in ("b_second", "a_first"):
        folder = src / "results" / name
        folder.mkdir(parents=True)
        (folder / "report.md").write_text(
            f"# Report {name}\n\nMade by `pml-bench compare seeds=2`.\n\n![metrics](metrics.png)\n"
        )
        shutil.copy(DOCS / "conf.py", folder / "metrics.png")  # any file: Sphinx only copies it
    out = root / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html", src, out],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_archive_lists_every_report_with_its_plot(built_docs):
    archive_html = (built_docs / "evidence.html").read_text(encoding="utf-8")
    first = archive_html.index('href="results/a_first/report.html"')
    assert first < archive_html.index('href="results/b_second/report.html"')
    assert "<img" in (built_docs / "results" / "a_first" / "report.html").read_text(encoding="utf-8")
    assert (built_docs / "_images" / "metrics.png").is_file()


@pytest.mark.slow
def test_the_sidebar_lists_the_archive_but_no_report(built_docs):
    for page in ("index.html", "results.html", "evidence.html"):
        html = (built_docs / page).read_text(encoding="utf-8")
        sidebar = html[html.index('class="sidebar-tree"') :]
        sidebar = sidebar[: sidebar.index("</div>")]
        assert 'href="evidence.html"' in sidebar or 'href="#"' in sidebar, page
        assert "report.html" not in sidebar, page
    assert "results_summary.png" in (built_docs / "index.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_no_page_has_an_empty_section(built_docs):
    for page in sorted(built_docs.rglob("*.html")):
        if page.name in ("genindex.html", "search.html", "py-modindex.html"):
            continue
        parser = _Sections()
        parser.feed(page.read_text(encoding="utf-8"))
        empty = [s["title"].strip() for s in parser.done if not s["text"].strip() and not s["children"]]
        assert not empty, f"{page.relative_to(built_docs)}: empty sections {empty}"


@pytest.mark.slow
def test_method_pages_render_their_math_for_mathjax(built_docs):
    for source in sorted((DOCS / "methods").glob("*.md")):
        if "$" not in source.read_text(encoding="utf-8"):
            continue
        html = (built_docs / "methods" / f"{source.stem}.html").read_text(encoding="utf-8")
        assert "mathjax" in html, f"{source.name}: no MathJax script"
        assert '<div class="math notranslate nohighlight">' in html, f"{source.name}: no display math"
        assert "$$" not in html, f"{source.name}: a $$ block was not parsed as math"


@pytest.mark.slow
def test_quickstart_lists_every_example(built_docs):
    html = (built_docs / "quickstart.html").read_text(encoding="utf-8")
    conf = _load_docs_conf()
    for path in conf.example_files():
        assert f"examples/{path.name}" in html


def test_unreachable_inventory_is_information_and_other_warnings_stay(caplog):
    conf = _load_docs_conf()
    logger = logging.getLogger("docs-test-intersphinx")
    logger.addFilter(conf._OfflineInventories())
    with caplog.at_level(logging.INFO, logger="docs-test-intersphinx"):
        logger.warning("failed to reach any of the inventories with the following issues:\n%s", "x")
        logger.warning("something else")
    levels = [(r.levelno, r.getMessage().split(":")[0]) for r in caplog.records]
    assert levels[0][0] == logging.INFO and "offline" in levels[0][1]
    assert levels[1] == (logging.WARNING, "something else")
