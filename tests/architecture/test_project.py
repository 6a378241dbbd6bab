"""The project's front door: README's commands are the ones CI runs."""

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
