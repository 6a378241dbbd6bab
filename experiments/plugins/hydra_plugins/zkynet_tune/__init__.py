"""zkynet's Hydra sweeper plugin: Hydra finds sweepers only in the `hydra_plugins`
namespace, so this folder joins it (experiments/run.py adds it before Hydra looks);
the work is done in experiments.tune_sweep."""
