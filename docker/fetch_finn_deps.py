"""Fetch finn-plus' external dependencies (finn-hlslib, board files, ...) with FINN's own updater.

Why not `finn deps update`: that command first insists on XSI (finn/interface/run_finn.py:
prepare_finn -> finn.xsi.ensure_available), which needs Vivado, and exits before fetching anything.
The image is built without Vivado (it is mounted at run time), so this calls the same
`DependencyUpdater` that `finn deps update` uses, on the same definitions file
(finn/interface/external_dependencies.yaml) and into the same folder (FINN_DEPS from FINN's settings).
XSI is built later, by docker/entrypoint.sh, once a Vivado is mounted.

    python docker/fetch_finn_deps.py [--deps DIR] [--definitions FILE] [--list]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deps", type=Path, default=None, help="target folder (default: FINN's FINN_DEPS setting)")
    parser.add_argument("--definitions", type=Path, default=None,
                        help="dependency definitions YAML (default: finn-plus' external_dependencies.yaml)")
    parser.add_argument("--list", action="store_true", help="print what would be fetched and exit")
    parser.add_argument("--git-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    from finn.interface.manage_deps import DependencyUpdater
    from finn.interface.settings import FINNSettings

    settings = FINNSettings.init(auto_set_environment_vars=True, flow_config=Path("dummy.yaml"))
    deps = (args.deps or settings.finn_deps).expanduser().absolute()
    definitions = (args.definitions or settings.finn_deps_definitions).expanduser().absolute()
    if not definitions.is_file():
        print(f"onebit: dependency definitions {definitions} not found; pass --definitions FILE", file=sys.stderr)
        return 2
    updater = DependencyUpdater(deps, definitions, args.git_timeout, non_interactive=True)
    names = updater.deps.get_all_dependencies()
    if args.list:
        for name in names:
            print(f"{name}\t{updater.deps.dependency_type_str(name)}")
        return 0
    print(f"onebit: fetching {len(names)} FINN dependencies into {deps}")
    updater.update()  # exits non-zero itself if a dependency fails
    missing = [n for n in updater.get_outdated_dependencies()]
    if missing:
        print(f"onebit: FINN dependencies still missing after the update: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
