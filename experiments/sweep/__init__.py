"""-m sweeps on Ray Tune, one process's code per file.

In the driver (the process Hydra started, through the sweeper plugin in
experiments/plugins/): settings.py (hydra.sweeper.*, a structured config),
space.py (Hydra's sweep syntax -> a search space), record.py (what a sweep was run
with: what a resume must match), plan.py (which trials run now, under which
numbers), cluster.py (Ray: started or joined, what it can give a trial), tuner.py
(the Tune experiment: searcher, scheduler, packs), driver.py (the sweep: its
MLflow run, Ray, Tune, its end), book.py (Tune's trials and their MLflow runs),
ranking.py (the table every sweep ends with).

In the Ray workers: worker.py (a trial, or a pack of trials, from its
configuration to its run), compose.py (a trial's configuration, composed once per
choice of groups), steps.py (compiled steps kept from one trial to the next),
reports.py (what a trial tells Tune, and what Tune decides back), pack.py (K runs
trained as one population), exploit.py (population-based training inside a pack). decisions.py is a Ray actor of the
sweep's own: its schedulers' decisions, which a stopped worker asks for.

basic.py serves Hydra's own basic sweeper instead (jobs one after another in
one process); trial_names.py is what driver and workers both read.
"""
