"""python -m experiments.bench {core,train,tracking,sweep,higher_order,operators,data} [options]"""

import argparse

from experiments import tracking as mlflow_tracking
from experiments.bench import core, data, higher_order, operators, sweep, tracking, train

BENCHMARKS = {
    "core": core,
    "train": train,
    "tracking": tracking,
    "sweep": sweep,
    "higher_order": higher_order,
    "operators": operators,
    "data": data,
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module in BENCHMARKS.items():
        module.add_arguments(commands.add_parser(name, help=(module.__doc__ or name).splitlines()[0]))
    args = parser.parse_args(argv)
    mlflow_tracking.configure_mlflow()
    BENCHMARKS[args.command].run(args)


if __name__ == "__main__":
    main()
