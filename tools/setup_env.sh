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
# The CPU build, by its local version label: `torch==2.13.0` alone resolves to the CUDA build (+ ~17 nvidia
# packages) on Linux. It comes from PyTorch's CPU wheel index, or a local wheel where pip has one (find-links).
# tests/test_environment.py checks it stayed; tests/test_dockerfile.py resolves it in isolation.
torch_spec="torch==2.13.0+cpu"
torch_index="${ONEBIT_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
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
    # A local +cpu wheel (pip's find-links) or a mirror that has it needs no index; only otherwise ask
    # PyTorch's CPU index (where it is unreachable, pip would retry it for every dependency of torch).
    "${pip[@]}" "$torch_spec" 2>/dev/null ||
        "${pip[@]}" --extra-index-url "$torch_index" "$torch_spec"
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

# Debian tools the hardware checks need: verilator (simulation of onebit's RTL in hw/rtl and of FINN's RTL
# nodes), yosys (resource counts without Vivado), tcl (tclsh runs FINN's generated Tcl in the contract
# tests' fake Xilinx tree, tests/hw/fake_xilinx.py). Without them those tests skip, saying why.
missing_tools=()
for tool in verilator:verilator yosys:yosys tclsh:tcl; do
    command -v "${tool%%:*}" >/dev/null || missing_tools+=("${tool##*:}")
done
if [ "${#missing_tools[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "onebit: installing Debian packages ${missing_tools[*]}"
        (apt-get install -y -q "${missing_tools[@]}" >/dev/null 2>&1 ||
         { apt-get update -q >/dev/null && apt-get install -y -q "${missing_tools[@]}" >/dev/null; }) ||
            echo "onebit: WARNING could not install ${missing_tools[*]}; run 'sudo apt-get install ${missing_tools[*]}' (the RTL and contract tests are skipped without them)" >&2
    else
        echo "onebit: WARNING ${missing_tools[*]} not found; run 'sudo apt-get install ${missing_tools[*]}' (the RTL and contract tests are skipped without them)" >&2
    fi
fi

# The Docker image's packages for the Vivado flow (Dockerfile: Boost program_options for finn_xsi's CMake,
# libtinfo5, locales, the X client libraries Vivado loads): tests/test_dockerfile.py checks the image names
# only packages this machine runs with, and configures finn_xsi's CMake with them. Installed where we are root
# (Debian); elsewhere those two tests say what is missing.
docker_packages=(libboost-program-options-dev libtinfo5 locales libglib2.0-0 libsm6 libxext6 libxrender1 libxtst6 libxi6)
if command -v dpkg-query >/dev/null; then
    missing_packages=()
    for package in "${docker_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing_packages+=("$package")
    done
    if [ "${#missing_packages[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "onebit: installing Debian packages ${missing_packages[*]}"
        (apt-get install -y -q --no-install-recommends "${missing_packages[@]}" >/dev/null 2>&1 ||
         { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing_packages[@]}" >/dev/null; }) ||
            echo "onebit: WARNING could not install ${missing_packages[*]} (the Docker contract tests say so)" >&2
    fi
fi
