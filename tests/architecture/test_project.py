"""The project's front door: README's commands are the ones CI runs; and its modules stay
small enough to read, one concept each."""

from pathlib import Path

ROOT = Path(__file__).parents[2]


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


MAX_LINES = 500  # a module longer than this holds more than one concept: split it


def test_no_source_file_is_over_max_lines():
    files = [path for folder in ("zkynet", "experiments") for path in sorted((ROOT / folder).rglob("*.py"))]
    assert any(p.name == "graph.py" for p in files), "zkynet/ was not scanned"
    counts = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in files}
    offenders = {path: n for path, n in counts.items() if n > MAX_LINES}
    assert not offenders, f"files over {MAX_LINES} lines (split them by concept): " + ", ".join(
        f"{path} ({n} lines)" for path, n in sorted(offenders.items(), key=lambda item: -item[1])
    )
