"""The project's front door: README's commands are the ones CI runs, the README stays a
README, and its links and those of the pages it points to lead somewhere; and its modules
stay small enough to read, one concept each."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "experiments" / "bench" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target) and ![alt](target "title")


def outside_code_blocks(markdown):
    return re.sub(r"```.*?```", "", markdown, flags=re.S)


def anchors(markdown):
    """The anchors of a page's headings, as GitHub makes them."""
    headings = re.findall(r"^#+\s+(.*)$", outside_code_blocks(markdown), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def relative_links(document):
    """(link as written, file, anchor or "") of each link of `document` that is not a URL;
    none in code blocks or code spans, where `[a](b)` is no link."""
    prose = re.sub(r"`[^`\n]*`", "", outside_code_blocks(document.read_text()))
    for target in LINK.findall(prose):
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        yield target, (document.parent / path if path else document), anchor


def test_ci_runs_the_readme_test_command():
    command = "source setup.sh && pytest"
    assert f"```bash\n{command}\n```" in (ROOT / "README.md").read_text()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines


def test_top_level_layout_is_the_users():
    for name in [
        "zkynet",
        "experiments",
        "conf",
        "tests",
        "notebooks",
        "pyproject.toml",
        "setup.sh",
        "download_datasets.sh",
        "README.md",
    ]:
        assert (ROOT / name).exists(), name


def test_the_readme_stays_a_readme_and_links_every_page():
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 350
    linked = {path.resolve() for _, path, _ in relative_links(readme)}
    assert [str(doc.relative_to(ROOT)) for doc in DOCUMENTS[1:] if doc.resolve() not in linked] == []


def test_every_relative_link_leads_to_a_file_and_its_anchor():
    broken, count = [], 0
    for document in DOCUMENTS:
        for written, path, anchor in relative_links(document):
            count += 1
            if not path.exists() or (anchor and (path.suffix != ".md" or anchor not in anchors(path.read_text()))):
                broken.append(f"{document.relative_to(ROOT)}: {written}")
    assert broken == []
    assert count >= len(DOCUMENTS)  # the links were found


MAX_LINES = 500  # a module longer than this holds more than one concept: split it


def test_no_source_file_is_over_max_lines():
    files = [path for folder in ("zkynet", "experiments") for path in sorted((ROOT / folder).rglob("*.py"))]
    assert any(p.name == "graph.py" for p in files), "zkynet/ was not scanned"
    counts = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in files}
    offenders = {path: n for path, n in counts.items() if n > MAX_LINES}
    assert not offenders, f"files over {MAX_LINES} lines (split them by concept): " + ", ".join(
        f"{path} ({n} lines)" for path, n in sorted(offenders.items(), key=lambda item: -item[1])
    )
