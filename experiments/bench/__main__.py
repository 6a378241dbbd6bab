"""python -m experiments.bench {core} [options]"""
import argparse

from experiments.bench import core


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    core.add_arguments(commands.add_parser("core", help=core.__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    {"core": core.run}[args.command](args)


if __name__ == "__main__":
    main()
