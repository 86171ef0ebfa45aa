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


def _vivado_missing() -> str | None:
    root = os.environ.get("XILINX_VIVADO")
    if root and root != _NO_VIVADO_PLACEHOLDER and Path(root, "bin", "vivado").exists():
        return None
    if shutil.which("vivado"):
        return None
    return "Vivado (no `vivado` on PATH and XILINX_VIVADO does not point to an installation)"


def _vitis_hls_missing() -> str | None:
    if shutil.which("vitis_hls") or shutil.which("vitis-run"):
        return None
    return "Vitis HLS (no `vitis_hls` on PATH)"


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

    if (Path(get_settings().finn_xsi) / "xsi.so").exists():
        return None
    return "XSI bindings (finn_xsi/xsi.so not built: run `finn deps update` with Vivado installed)"


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


def prepare_finn(work_dir: str | Path) -> Path:
    """Make finn-plus usable in this process with its scratch files under `work_dir`; returns that folder.

    - FINN_BUILD_DIR: finn-plus puts every generated file (code-gen folders, temporary models) there and
      refuses to run without it; it must exist. We point it into the caller's build folder, not /tmp or $HOME.
    - FINN_SETTINGS: without it, settings resolution creates ~/.finn/ (FINNSettings.resolve_settings_file);
      a (non-existent) file inside the work folder keeps $HOME clean and uses the defaults.
    - initialize_dummy_settings(): FINN's global settings object is normally created by run_finn.py;
      every transformation that touches the build dir calls get_settings() and raises otherwise.
    - XILINX_VIVADO: see _NO_VIVADO_PLACEHOLDER (only set when the user has not set it).
    - finn.xsi names: see _RtlsimUnavailable (only bound when XSI really is missing).
    - hw/finn/fixes.py: corrections to finn-plus behaviour that would build wrong hardware.
    Calling it again with another folder re-points the settings (one build after another in one process).
    """
    global _prepared_dir
    work = Path(work_dir).resolve()
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FinnEnvironmentError(f"cannot create FINN's work folder {work}: {error}; pass a writable --out") from error
    os.environ["FINN_BUILD_DIR"] = str(work)
    os.environ["FINN_SETTINGS"] = str(work / "finn_settings.yaml")
    os.environ.setdefault("XILINX_VIVADO", _NO_VIVADO_PLACEHOLDER)
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
