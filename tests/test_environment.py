"""The environment that tools/setup_env.sh builds is the one it asked for.

The failure this guards against is silent: a resolving `pip install` replacing the CPU torch 2.13.0 with
a multi-GB CUDA build because of the finn-plus/brevitas setuptools pin.
"""
from __future__ import annotations

import importlib.metadata as md
import re
import sysconfig
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "tools" / "requirements.lock"
SETUP = REPO / "tools" / "setup_env.sh"
# Only what is installed in the environment itself: once pkg_resources is imported (Brevitas does), setuptools
# puts its vendored copies (packaging, zipp, ...) on sys.path, and their metadata would shadow the real ones.
SITE_PACKAGES = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]


def _installed() -> dict[str, str]:
    return {re.sub(r"[-_.]+", "-", d.metadata["Name"].lower()): d.version
            for d in md.distributions(path=SITE_PACKAGES)}


def _requested_torch() -> str:
    match = re.search(r'torch_spec="torch==([^"]+)"', SETUP.read_text())
    assert match, "tools/setup_env.sh no longer names the torch version it installs"
    return match.group(1)


def test_torch_is_the_requested_cpu_build():
    assert _requested_torch().endswith("+cpu"), "tools/setup_env.sh must name the +cpu build (else pip picks CUDA)"
    assert torch.__version__ == _requested_torch()
    assert torch.version.cuda is None, f"a CUDA torch was installed: {torch.__version__}"


def test_no_cuda_runtime_packages_were_pulled_in():
    cuda = [n for n in sorted(_installed()) if re.match(r"(nvidia-|triton$|cuda-)", n)]
    assert cuda == [], f"CUDA packages in the environment: {cuda}"


def test_every_installed_package_matches_the_lock():
    pinned = {}
    for line in LOCK.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pinned[re.sub(r"[-_.]+", "-", name.lower())] = version.strip()
    installed = _installed()
    wrong = {n: (installed.get(n), v) for n, v in pinned.items() if installed.get(n) != v}
    assert wrong == {}, f"installed != lock (installed, locked): {wrong}"
    unlocked = sorted(set(installed) - set(pinned) - {"torch", "onebit", "pip"})
    assert unlocked == [], f"packages installed but not pinned in the lock: {unlocked}"


def test_key_versions():
    assert md.version("finn-plus") == "1.6.1"
    assert md.version("brevitas") == "0.13.0"
    import numpy

    assert hasattr(numpy, "bitwise_count"), "numpy>=2 is needed for the accelerator model"



def test_the_wheel_holds_what_an_installed_onebit_runs_on(tmp_path):
    """`pip install .` must give a package that runs: the run-time data files and the notebooks are in the
    wheel, the repository's bench/ is not, and every declared dependency is pinned as in the lock."""
    import subprocess
    import sys
    import tomllib
    import zipfile

    import shutil

    # Built from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    for name in ("onebit", "quant_models", "export", "hw", "notebooks", "bench"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("onebit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"hw/rtl/sv/onebit_mvau.sv", "hw/check/verilator/axis_harness.cpp",
            "hw/check/cppsim_shims/hls_stream.h", "onebit/cli/__init__.py"} <= set(names)
    assert any(n.endswith(".data/data/share/onebit/notebooks/2_validate.ipynb") for n in names)
    assert not any(n.startswith(("bench/", "tests/")) for n in names)
    locked = dict(line.strip().split("==", 1) for line in LOCK.read_text().splitlines()
                  if "==" in line and not line.startswith("#"))
    locked = {re.sub(r"[-_.]+", "-", k.lower()): v for k, v in locked.items()}
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, sep, version = requirement.partition("==")
        if sep and name != "torch":  # torch comes from setup_env.sh (+cpu), not the lock
            assert locked.get(re.sub(r"[-_.]+", "-", name.lower())) == version, requirement
