"""python -m experiments.bench {core,train,tracking,sweep,operators} [options]"""

import argparse

from experiments.bench import core, operators, sweep, tracking, train

BENCHMARKS = {"core": core, "train": train, "tracking": tracking, "sweep": sweep, "operators": operators}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module in BENCHMARKS.items():
        module.add_arguments(commands.add_parser(name, help=module.__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    BENCHMARKS[args.command].run(args)


if __name__ == "__main__":
    main()
