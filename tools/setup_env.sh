#!/usr/bin/env bash
# Creates the project-local virtualenv .venv with pinned versions, and installs the dataset.
# Used by `make`, by CI and inside the Dockerfile: one recipe everywhere.
#
# Why this order and --no-deps: finn-plus 1.6.1 pins brevitas 0.13.0, which pins setuptools<70, while
# torch 2.13 needs setuptools>=77; a resolving `pip install` would "fix" that by replacing the CPU torch
# with a multi-GB CUDA build. So torch goes in first, alone, and everything else comes from a complete
# lock file installed with --no-deps: pip never resolves, so it can never touch torch.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${ONEBIT_VENV:-$here/.venv}"
python="${PYTHON:-python3}"
torch_spec="torch==2.13.0"   # the CPU build; tests/test_environment.py checks it stayed
stamp="$venv/.onebit-setup-stamp"
lock="$here/tools/requirements.lock"

want="$(cat "$lock" "$0" "$here/pyproject.toml" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "onebit: environment $venv is up to date"
else
    # From scratch, so a package dropped from the lock does not linger in an old environment.
    echo "onebit: creating environment $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
    "${pip[@]}" "$torch_spec"
    "${pip[@]}" --no-deps -r "$lock"
    "${pip[@]}" --no-deps --no-build-isolation -e "$here"
    echo "$want" > "$stamp"
fi

# Fashion-MNIST is the embedded default dataset, from Debian's package.
fmnist=/usr/share/datasets/fashion-mnist
if [ ! -f "$fmnist/t10k-images-idx3-ubyte.gz" ] && [ ! -f "$fmnist/t10k-images-idx3-ubyte" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "onebit: installing Debian package dataset-fashion-mnist"
        (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
         { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }) ||
            echo "onebit: WARNING could not install dataset-fashion-mnist; run 'sudo apt-get install dataset-fashion-mnist' or set ONEBIT_DATA to a folder with the idx files" >&2
    else
        echo "onebit: WARNING Fashion-MNIST not found in $fmnist; run 'sudo apt-get install dataset-fashion-mnist' or set ONEBIT_DATA to a folder with the idx files" >&2
    fi
fi

# Verilator simulates FINN's generated RTL nodes (verification level rtl_nodes, hw/check/rtl_nodes.py);
# Debian's 5.006 works. Without it that level is reported as skipped, nothing else changes.
if ! command -v verilator >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "onebit: installing Debian package verilator"
        (apt-get install -y -q verilator >/dev/null 2>&1 ||
         { apt-get update -q >/dev/null && apt-get install -y -q verilator >/dev/null; }) ||
            echo "onebit: WARNING could not install verilator; run 'sudo apt-get install verilator' (level rtl_nodes is skipped without it)" >&2
    else
        echo "onebit: WARNING verilator not found; run 'sudo apt-get install verilator' (level rtl_nodes is skipped without it)" >&2
    fi
fi
