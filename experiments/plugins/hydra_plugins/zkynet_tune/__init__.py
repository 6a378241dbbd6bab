"""zkynet's Hydra sweeper plugin: Hydra finds sweepers only in the `hydra_plugins`
namespace package, so experiments/plugins/ is put on the path (experiments/run.py's
main) before Hydra looks; the work is done in experiments.sweep (driver.py)."""
