"""The number in a Tune trial's name (`trial_7`, `pack_2`: experiments.sweep.tuner names
them): the driver's books and the workers read it back."""


def trial_number(name: str) -> int:
    return int(name.rsplit("_", 1)[-1])
