"""Every workaround needed to run finn-plus 1.6.1 without Vivado, in one place.

finn-plus expects to be started through its `finn` CLI (run_finn.py) inside a Vivado installation. Up to
estimate reports and HLS/RTL code generation it needs none of Vivado's binaries, only some of its start-up
state. `prepare_finn(work_dir)` creates exactly that state, and the `tool_status()` probes tell the
builder which later steps can really run here. Nothing is faked: a step that needs a missing tool is
skipped by hw/finn/build.py and listed in skipped.txt, and the rtlsim entry point raises if anything calls it.

Call `prepare_finn()` before importing `finn.builder.build_dataflow_steps` (or use `import_finn_steps()`).
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from onebit.errors import OnebitError

# A Vivado-looking value for XILINX_VIVADO when no Vivado is installed. Why it is needed: finn.xsi parses
# the Vivado version out of XILINX_VIVADO (finn/xsi/__init__.py: is_available) and the builder's exit
# path records `Path(XILINX_VIVADO).name` as tool version. The path does not exist, so every probe in
# tool_status() still reports Vivado as missing; the version is the one finn-plus 1.6.1 supports.
_NO_VIVADO_PLACEHOLDER = "/opt/Xilinx/Vivado/2024.2-not-installed"


class FinnEnvironmentError(OnebitError):
    """finn-plus could not be prepared (or a tool-only path was called where the tool is missing)."""


@dataclass(frozen=True)
class ToolStatus:
    """Which of FINN's external tools exist on this machine (each `None` or the reason it is missing)."""

    vivado: str | None
    vitis_hls: str | None
    finn_hlslib: str | None
    xsi: str | None

    @property
    def full_flow(self) -> bool:
        return not any((self.vivado, self.vitis_hls, self.finn_hlslib, self.xsi))

    @property
    def bitstream_flow(self) -> bool:
        """Stitched IP, synthesis and bitfile can run: Vivado, Vitis HLS and finn-hlslib exist, and XSI
        either exists or its two uses are skipped on purpose (ONEBIT_SKIP_RTLSIM=1, see rtlsim_skipped)."""
        return not any((self.vivado, self.vitis_hls, self.finn_hlslib)) and (self.xsi is None or rtlsim_skipped())

    def summary(self) -> str:
        """One line for the entrypoint and the build log: which part of the flow runs here."""
        if self.full_flow:
            return ("full flow enabled: Vivado, Vitis HLS, finn-hlslib and XSI found (stitched IP, FIFO sizing, "
                    "rtlsim performance, synthesis, bitfile, driver, deployment package)")
        if self.bitstream_flow:
            return (f"full bitstream flow enabled without XSI RTL simulation ({SKIP_RTLSIM_ENV}=1): FIFOs of "
                    "--mvau rtl builds sized by onebit's Verilator simulation, of --mvau hls builds at FINN's minimal "
                    "depths (force_minimal_fifos); step_measure_rtlsim_performance skipped")
        missing = "; ".join(m for m in (self.vivado, self.vitis_hls, self.finn_hlslib, self.xsi) if m)
        return f"NO BITSTREAM WILL BE BUILT: missing {missing}; the build stops after HW code generation"


# Where XSI cannot be built (no Vivado simulator headers, or the contract tests' fake Xilinx tree), the two
# steps that simulate RTL with it can be replaced on purpose: FIFO sizing by FINN's own force_minimal_fifos
# strategy (FIFOs inserted at minimal depth, no simulation) and step_measure_rtlsim_performance skipped and
# listed in skipped.txt. Never implicit: a host whose XSI build failed gets no bitstream unless the user asks.
SKIP_RTLSIM_ENV = "ONEBIT_SKIP_RTLSIM"


def rtlsim_skipped() -> bool:
    return os.environ.get(SKIP_RTLSIM_ENV, "") not in ("", "0")


def _vivado_missing() -> str | None:
    root = os.environ.get("XILINX_VIVADO")
    if root and root != _NO_VIVADO_PLACEHOLDER and Path(root, "bin", "vivado").exists():
        return None
    if shutil.which("vivado"):
        return None
    return "Vivado (no `vivado` on PATH and XILINX_VIVADO does not point to an installation)"


def _vitis_hls_missing() -> str | None:
    # finn.util.hls.CallHLS: Vivado <= 2024.2 runs `vitis_hls`, later versions `vitis-run --mode hls`.
    from finn.util.basic import get_vivado_version

    version = get_vivado_version()
    tool = "vitis-run" if version is not None and version > (2024, 2) else "vitis_hls"
    if shutil.which(tool):
        return None
    return f"Vitis HLS (no `{tool}` on PATH; source Vitis/<version>/settings64.sh)"


def _finn_hlslib_missing() -> str | None:
    from finn.util.settings import get_settings

    deps = Path(get_settings().finn_deps)
    if (deps / "finn-hlslib").is_dir():
        return None
    return f"finn-hlslib (not found in FINN's dependency folder {deps})"


def _xsi_missing() -> str | None:
    if _vivado_missing():
        return "XSI, Vivado's simulator interface (needs Vivado)"
    from finn.util.settings import get_settings

    xsi_dir = Path(get_settings().finn_xsi)
    if not (xsi_dir / "xsi.so").exists():
        return (f"XSI bindings ({xsi_dir}/xsi.so not built: run `python -m hw.finn.env setup-xsi` or "
                "`finn deps update` with Vivado installed)")
    lib = f"{os.environ.get('XILINX_VIVADO', '')}/lib/lnx64.o"
    if lib not in _LD_LIBRARY_PATH_AT_START.split(os.pathsep):
        # ld.so reads LD_LIBRARY_PATH once at process start; the in-process XSI kernel needs Vivado's
        # libraries on it (finn/interface/run_finn.py: ensure_ld_library_path).
        return (f"XSI loader path (this process started without {lib} in LD_LIBRARY_PATH; start onebit with "
                f"LD_LIBRARY_PATH={lib}:$LD_LIBRARY_PATH, as docker/entrypoint.sh does)")
    return _fifosim_missing()


# finn-plus' XSI FIFO sizing and rtlsim measurement configure and build finn_xsi's CMakeLists.txt (BuildSimulation),
# which requires Boost program_options; without it the flow dies in step_set_fifo_depths, so XSI does not count.
BOOST_PROGRAM_OPTIONS_HEADERS = (Path("/usr/include/boost/program_options.hpp"),
                                 Path("/usr/local/include/boost/program_options.hpp"))


def _fifosim_missing() -> str | None:
    if any(p.is_file() for p in BOOST_PROGRAM_OPTIONS_HEADERS):
        return None
    return ("Boost program_options for finn-plus' XSI simulation backend (finn_xsi's CMakeLists.txt: "
            "apt-get install libboost-program-options-dev; the onebit image has it)")


def tool_status() -> ToolStatus:
    """Probe for Vivado, Vitis HLS, finn-hlslib and XSI; call after prepare_finn()."""
    return ToolStatus(_vivado_missing(), _vitis_hls_missing(), _finn_hlslib_missing(), _xsi_missing())


class _RtlsimUnavailable:
    """Stands in for finn.xsi's simulation entry points where XSI cannot exist.

    Why: finn.builder.build_dataflow_steps does `from finn.xsi import SimEngine` at import time, and
    finn.xsi resolves that name lazily by building XSI against Vivado (and raising without it). Binding
    the name to this class lets the builder import; any real rtlsim use still fails loudly here.
    """

    def __init__(self, *args, **kwargs) -> None:
        raise FinnEnvironmentError(
            "RTL simulation needs Vivado's XSI, which is not installed here; install Vivado 2024.2 "
            "and run `finn deps update`"
        )


_XSI_NAMES = ("SimEngine", "locate_glbl", "compile_sim_obj", "get_simkernel_so", "load_sim_obj",
              "reset_rtlsim", "close_rtlsim", "rtlsim_multi_io")

_prepared_dir: Path | None = None
_LD_LIBRARY_PATH_AT_START = os.environ.get("LD_LIBRARY_PATH", "")


def set_finn_launcher_environment() -> dict[str, str]:
    """Set what finn-plus' own launcher sets before a flow (finn/interface/run_finn.py: prepare_finn).

    Its Tcl templates read these: every HLS synthesis script `$::env(FINN_CUSTOM_HLS)`, the stitched-IP and
    Zynq-shell scripts `$::env(FINN_RTLLIB)`; unset, Vivado stops with "no such variable". The values come
    from finn-plus' own helpers (resolve_module_path, xilinx_ld_library_paths), so they follow the
    installed finn-plus. Returns the variables it set or changed.
    """
    from finn.interface.interface_utils import resolve_module_path
    from finn.interface.run_finn import prepend_ld_library_paths, xilinx_ld_library_paths

    before = dict(os.environ)
    os.environ["FINN_RTLLIB"] = resolve_module_path("finn-rtllib")
    os.environ["FINN_CUSTOM_HLS"] = resolve_module_path("custom_hls")
    os.environ.setdefault("PYTHONPATH", "")
    # Avoids permission problems with the XilinxTclStore during synthesis (finn-plus sets it unless the
    # user set it).
    os.environ.setdefault("XILINX_LOCAL_USER_DATA", "no")
    if os.environ.get("XILINX_VIVADO") and os.environ["XILINX_VIVADO"] != _NO_VIVADO_PLACEHOLDER:
        # For the tools FINN starts (vivado, xelab, ...); this process's own loader path is fixed at start.
        prepend_ld_library_paths(xilinx_ld_library_paths())
        _add_tool_paths()
    return {k: v for k, v in os.environ.items() if before.get(k) != v}


def _add_tool_paths() -> None:
    """finn-plus' set_synthesis_tools_paths, without its warnings: the tools' bin/ folders on PATH.

    From 2024.2 XILINX_HLS points to Vitis/<version>, where vitis_hls lives; before, to Vitis_HLS/<version>
    (finn/interface/interface_utils.py handles both the same way).
    """
    for variable, tool in (("XILINX_VIVADO", "vivado"), ("XILINX_VITIS", "vitis"), ("XILINX_HLS", "vitis_hls")):
        root = os.environ.get(variable)
        if not root:
            continue
        if tool == "vitis_hls" and not Path(root, "bin", tool).exists():
            root = root.replace("Vitis", "Vitis_HLS")
        bin_dir = str(Path(root, "bin").absolute())
        if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + bin_dir


def prepare_finn(work_dir: str | Path) -> Path:
    """Make finn-plus usable in this process with its scratch files under `work_dir`; returns that folder.

    - FINN_BUILD_DIR: finn-plus puts every generated file (code-gen folders, temporary models) there and
      refuses to run without it; it must exist. We point it into the caller's build folder, not /tmp or $HOME.
    - FINN_SETTINGS: without it, settings resolution creates ~/.finn/ (FINNSettings.resolve_settings_file);
      a (non-existent) file inside the work folder keeps $HOME clean and uses the defaults.
    - initialize_dummy_settings(): FINN's global settings object is normally created by run_finn.py;
      every transformation that touches the build dir calls get_settings() and raises otherwise.
    - XILINX_VIVADO: see _NO_VIVADO_PLACEHOLDER (only set when the user has not set it).
    - FINN_RTLLIB, FINN_CUSTOM_HLS, XILINX_LOCAL_USER_DATA, LD_LIBRARY_PATH, tool PATH: what finn-plus'
      launcher sets (set_finn_launcher_environment).
    - finn.xsi names: see _RtlsimUnavailable (only bound when XSI really is missing).
    - hw/finn/fixes.py: corrections to finn-plus behaviour that would build wrong hardware.
    Calling it again with another folder re-points the settings (one build after another in one process).
    """
    global _prepared_dir
    workers = os.environ.get("NUM_DEFAULT_WORKERS")
    if workers is not None and (not workers.strip().isdigit() or int(workers) < 1):
        # qonnx int()s it in the middle of the build: a traceback there
        raise FinnEnvironmentError(f"$NUM_DEFAULT_WORKERS={workers!r} is not a positive integer (FINN's worker "
                                   "count); set it to e.g. 2 or unset it")
    work = Path(work_dir).resolve()
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FinnEnvironmentError(f"cannot create FINN's work folder {work}: {error}; pass a writable --out") from error
    os.environ["FINN_BUILD_DIR"] = str(work)
    os.environ["FINN_SETTINGS"] = str(work / "finn_settings.yaml")
    os.environ.setdefault("XILINX_VIVADO", _NO_VIVADO_PLACEHOLDER)
    set_finn_launcher_environment()
    # FINN's parallel transformations default to all cores; keep the count explicit and bounded.
    os.environ.setdefault("NUM_DEFAULT_WORKERS", str(min(4, os.cpu_count() or 1)))

    import finn.util.settings as finn_settings

    finn_settings.initialize_dummy_settings()
    settings = finn_settings.get_settings()
    if Path(settings.finn_build_dir).resolve() != work:
        raise FinnEnvironmentError(
            f"finn-plus settings point FINN_BUILD_DIR to {settings.finn_build_dir}, expected {work}; "
            f"unset FINN_BUILD_DIR/FINN_SETTINGS overrides and retry"
        )

    import finn.xsi as finn_xsi

    if _xsi_missing():
        for name in _XSI_NAMES:
            if name not in vars(finn_xsi):
                setattr(finn_xsi, name, _RtlsimUnavailable)
    else:
        finn_xsi.ensure_available()
    from hw.finn import fixes as finn_fixes

    finn_fixes.apply()
    _prepared_dir = work
    return work


def prepared_dir() -> Path | None:
    return _prepared_dir


def vivado_version() -> str:
    """The Vivado version FINN would target (parsed like finn.util.basic.get_vivado_version)."""
    match = re.search(r"\b(20\d{2})\.(1|2)\b", os.environ.get("XILINX_VIVADO", ""))
    return f"{match.group(1)}.{match.group(2)}" if match else "unknown"


def import_finn_steps(work_dir: str | Path):
    """prepare_finn(work_dir), then FINN's builder step module (import is ~10 s the first time)."""
    prepare_finn(work_dir)
    import finn.builder.build_dataflow_steps as steps

    return steps


# ---------------------------------------------------------------------------------------------------
# XSI where the running user can write, and the one-line tool report (docker/entrypoint.sh calls both)

def setup_xsi(xsi_dir: str | Path, force: bool = False) -> Path:
    """Build finn-plus' XSI bindings in `xsi_dir` (a writable, persistent folder); returns the folder.

    Why not `python -m finn.xsi.setup`: it builds inside finn-plus' installed package (an image's venv that a
    host uid cannot write, and that `docker run --rm` forgets) and needs FINN's global settings, which only
    its launcher creates ("Could not find global settings"). This copies finn-plus' finn_xsi sources to
    `xsi_dir` once, points FINN's setting there (FINN_XSI, which FINNSettings reads from the environment)
    and calls finn-plus' own build_xsi, which rebuilds only for another Vivado version.
    """
    from finn.interface.interface_utils import resolve_module_path

    target = Path(xsi_dir).expanduser().absolute()
    source = Path(resolve_module_path("finn_xsi"))
    if source.resolve() != target.resolve() and not (target / "xsi_bind.cpp").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "xsi.so", "VERSION", "*.o"))
    os.environ["FINN_XSI"] = str(target)
    work = target.parent / "finn_work"
    os.environ.setdefault("FINN_SETTINGS", str(work / "finn_settings.yaml"))
    os.environ.setdefault("FINN_BUILD_DIR", str(work))
    work.mkdir(parents=True, exist_ok=True)
    set_finn_launcher_environment()
    import finn.util.settings as finn_settings

    finn_settings.initialize_dummy_settings()
    from finn.xsi.setup import build_xsi

    if not build_xsi(force=force, verbose=False) or not (target / "xsi.so").exists():
        raise FinnEnvironmentError(f"building finn-plus' XSI bindings in {target} failed (needs Vivado's "
                                   "data/xsim/include, g++ and pybind11); see the output above")
    return target


def main(argv: list[str] | None = None) -> int:
    """`python -m hw.finn.env status` (one line: what runs here) or `setup-xsi DIR`."""
    import argparse
    import sys
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m hw.finn.env")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="print which part of the FINN flow can run here")
    xsi = sub.add_parser("setup-xsi", help="build finn-plus' XSI bindings in a writable folder")
    xsi.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "setup-xsi":
        try:
            print(f"onebit: XSI bindings in {setup_xsi(args.dir)}")
        except (FinnEnvironmentError, OSError, EnvironmentError, ValueError) as error:
            print(f"onebit: {error}", file=sys.stderr)
            return 1
        return 0
    with tempfile.TemporaryDirectory(prefix="onebit-probe-") as work:
        prepare_finn(work)
        status = tool_status()
    line = f"onebit: {status.summary()}"
    print(line, file=sys.stdout if status.bitstream_flow else sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
