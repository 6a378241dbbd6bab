"""download_datasets.sh with a fake Kaggle CLI: checks first, idempotent, atomic."""

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "download_datasets.sh"

FAKE_KAGGLE = textwrap.dedent('''\
    #!/usr/bin/env python3
    """A stand-in for the Kaggle CLI: writes a zip with the files the real one would."""
    import os, sys, zipfile
    args = sys.argv[1:]
    with open(os.environ["FAKE_KAGGLE_LOG"], "a") as log:
        log.write(" ".join(args) + "\\n")
    slug = args[args.index("-d") + 1] if "-d" in args else args[args.index("-c") + 1]
    folder = args[args.index("-p") + 1]
    if slug in os.environ.get("FAKE_KAGGLE_FAIL", ""):
        open(os.path.join(folder, "partial.zip"), "w").write("truncated")
        sys.exit(1)
    files = {"oddrationale/mnist-in-csv": ["mnist_train.csv", "mnist_test.csv"],
             "altavish/boston-housing-dataset": ["HousingData.csv"]}[slug]
    with zipfile.ZipFile(os.path.join(folder, "archive.zip"), "w") as z:
        for name in files:
            z.writestr(name, "label,1x1\\n0,0\\n")
    ''')


@pytest.fixture
def env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kaggle"
    fake.write_text(FAKE_KAGGLE)
    fake.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "DATASETS_DIR": str(tmp_path / "datasets"),
        "KAGGLE_USERNAME": "someone",
        "KAGGLE_KEY": "secret",
        "FAKE_KAGGLE_LOG": str(tmp_path / "calls.log"),
    }


def download(env, *names):
    return subprocess.run(["bash", str(SCRIPT), *names], env=env, capture_output=True, text=True)


def test_downloads_then_skips(env, tmp_path):
    first = download(env, "mnist", "boston")
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "datasets" / "mnist" / "mnist_train.csv").exists()
    assert (tmp_path / "datasets" / "boston" / "HousingData.csv").exists()
    second = download(env, "mnist", "boston")
    assert second.returncode == 0 and second.stdout.count("already in") == 2
    assert len((tmp_path / "calls.log").read_text().splitlines()) == 2  # nothing fetched again


def test_a_failed_download_leaves_nothing_behind(env, tmp_path):
    result = download({**env, "FAKE_KAGGLE_FAIL": "oddrationale/mnist-in-csv"}, "mnist")
    assert result.returncode == 1 and "mnist: download failed" in result.stderr
    assert list((tmp_path / "datasets").iterdir()) == []


def test_missing_cli_and_token_are_explained(env, tmp_path):
    no_cli = download({**env, "PATH": "/usr/bin:/bin"}, "mnist")
    assert no_cli.returncode == 1 and "pip install kaggle" in no_cli.stderr
    no_token = {k: v for k, v in env.items() if k not in ("KAGGLE_USERNAME", "KAGGLE_KEY")}
    result = download({**no_token, "KAGGLE_CONFIG_DIR": str(tmp_path / "nowhere")}, "mnist")
    assert result.returncode == 1 and "no Kaggle API token" in result.stderr and "kaggle.json" in result.stderr
    unknown = download(env, "imagenet")
    assert unknown.returncode == 1 and "unknown dataset 'imagenet'" in unknown.stderr
