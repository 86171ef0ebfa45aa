"""`onebit unlock BUILD`: clear the lock a killed onebit left, when its holder cannot be checked from here.

A lock of a process on this machine that no longer runs is taken over by the next command by itself
(onebit/buildfolder.py); one written on another host (a build SIGKILLed in a container, then run on the
host) cannot be checked, so it stays until the user says so. This refuses while a live process on this
machine holds the lock.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from onebit.buildfolder import unlock
from onebit.errors import cli_errors


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onebit unlock", description=__doc__.splitlines()[0])
    parser.add_argument("build_dir", type=Path, help="the build folder whose .onebit.lock to remove")
    args = parser.parse_args(argv)
    print(unlock(args.build_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
