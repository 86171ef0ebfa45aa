"""hw/finn_env: finn-plus runs without Vivado after prepare_finn, with its files where we say."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_builder_imports_and_settings_point_into_the_work_dir(tmp_path: Path) -> None:
    # A fresh interpreter with a fresh HOME: nothing may land in $HOME (~/.finn) and the builder must import.
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from hw.finn.env import import_finn_steps, tool_status\n"
        "steps = import_finn_steps(%r)\n"
        "from finn.util.settings import get_settings\n"
        "print(get_settings().finn_build_dir)\n"
        "assert 'step_streamline' in steps.build_dataflow_step_lookup\n"
        "status = tool_status(); print(status.vivado is not None, status.full_flow)\n"
        "import finn.xsi\n"
        "try:\n    finn.xsi.SimEngine()\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    ) % (str(REPO), str(tmp_path / "work"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINN_", "XILINX"))}
    env["HOME"] = str(home)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert Path(lines[0]) == (tmp_path / "work").resolve()
    if lines[1] == "True False":  # no Vivado here: rtlsim must fail loudly, not silently
        assert "FinnEnvironmentError" in lines[2] and "Vivado" in lines[2]
    assert not (home / ".finn").exists()


def test_xsi_without_boost_is_not_the_full_flow(tmp_path: Path, monkeypatch) -> None:
    """finn-plus' XSI FIFO sizing builds finn_xsi (CMake, Boost program_options): where Boost is absent the flow
    would die in step_set_fifo_depths, so the one-line status (docker/entrypoint.sh prints it) must not say
    "full flow enabled" but name what is missing."""
    import hw.finn.env as env

    monkeypatch.setattr(env, "BOOST_PROGRAM_OPTIONS_HEADERS", (tmp_path / "absent" / "program_options.hpp",))
    reason = env._fifosim_missing()
    assert reason and "libboost-program-options-dev" in reason
    status = env.ToolStatus(vivado=None, vitis_hls=None, finn_hlslib=None, xsi=reason)
    monkeypatch.delenv(env.SKIP_RTLSIM_ENV, raising=False)
    assert not status.full_flow and "full flow enabled" not in status.summary()
    assert "NO BITSTREAM WILL BE BUILT" in status.summary() and "Boost" in status.summary()
    header = tmp_path / "boost" / "program_options.hpp"
    header.parent.mkdir()
    header.write_text("// stand-in\n")
    monkeypatch.setattr(env, "BOOST_PROGRAM_OPTIONS_HEADERS", (header,))
    assert env._fifosim_missing() is None
