"""Running the CLI as a user does, against a throwaway MLflow store."""
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

ROOT = Path(__file__).parents[2]


class Cli:
    def __init__(self, folder):
        self.folder = folder
        self.store = f"sqlite:///{folder / 'mlflow.db'}"
        self.client = MlflowClient(self.store)
        self.count = 0

    def args(self, *overrides):
        """The command line; `-m` among the overrides makes it a sweep."""
        self.count += 1
        output = self.folder / "outputs" / str(self.count)
        if "-m" in overrides:
            return [sys.executable, "-m", "experiments.run", "-m", f"tracking.uri={self.store}",
                    f"hydra.sweep.dir={output}", *(o for o in overrides if o != "-m")]
        return [sys.executable, "-m", "experiments.run", f"tracking.uri={self.store}", f"hydra.run.dir={output}",
                *overrides]

    def __call__(self, *overrides, env=None, timeout=900):
        return subprocess.run(self.args(*overrides), cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)

    def start(self, *overrides):
        return subprocess.Popen(self.args(*overrides), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def runs(self, experiment="zkynet"):
        found = self.client.get_experiment_by_name(experiment)
        return self.client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"]) if found else []

    def artifacts(self, run_id, path=None):
        files = {}
        for item in self.client.list_artifacts(run_id, path):
            if item.is_dir:
                files.update(self.artifacts(run_id, item.path))
            else:
                files[item.path] = item.file_size
        return files


@pytest.fixture
def cli(tmp_path):
    return Cli(tmp_path)
