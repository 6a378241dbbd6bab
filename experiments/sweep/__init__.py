"""-m sweeps on Ray Tune, one process's code per file.

In the driver (the process Hydra started, through the sweeper plugin in
experiments/plugins/): settings.py (hydra.sweeper.*, a structured config),
space.py (Hydra's sweep syntax -> a Tune search space), driver.py (the sweep:
Ray, the Tuner, the sweep's MLflow run, its end), book.py (Tune's trials and
their MLflow runs), ranking.py (the table every sweep ends with).

In the Ray workers: worker.py (a trial, or a pack of trials, from its
configuration to its run), reports.py (what a trial tells Tune, and what Tune
decides back), pack.py (K runs trained as one population).

basic.py serves Hydra's own basic sweeper instead (jobs one after another in
one process); trial_names.py is what driver and workers both read.
"""
