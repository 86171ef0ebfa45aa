"""Issue 9: what would stop the first real Vivado run, each reproduced here without Xilinx tools.

* The model after ZynqBuild is the partitioned parent (IODMA | dataflow | IODMA): io.json, the accelerator
  model, folding.json and the report must read the dataflow child, with FINN's own driver shapes.
* finn-plus' launcher environment (FINN_CUSTOM_HLS, FINN_RTLLIB, ...) that its Tcl templates read.
* The clock: accelerator clock and PS clock recorded separately; fclk0 is the PS clock.
* The KV260 (Kria-PYNQ on Ubuntu) deployment README.
* --auto-fold configs accepted by finn-plus' DataflowBuildConfig.construct_from.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import quant_models.compat  # noqa: F401
from hw.boards import board_names, get_board

REPO = Path(__file__).resolve().parents[2]


def zynq_partition(build: Path, board: str, work: Path):
    """ZynqBuild's transforms before its first Vivado call (finn-plus 1.6.1 make_zynq_proj.py), on a real build."""
    from hw.finn.env import prepare_finn

    prepare_finn(build / "hw")
    from finn.transformation.fpgadataflow.create_dataflow_partition import CreateDataflowPartition
    from finn.transformation.fpgadataflow.floorplan import Floorplan
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_iodma import InsertIODMA
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn.util.basic import pynq_native_port_width, pynq_part_map
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames

    finn_board = get_board(board).finn_board
    model = ModelWrapper(str(build / "finn" / "step_hw_codegen.onnx"))
    for transform in (InsertIODMA(pynq_native_port_width[finn_board]), InsertDWC(),
                      SpecializeLayers(pynq_part_map[finn_board]), Floorplan(),
                      CreateDataflowPartition(partition_model_dir=str(work / "partitions"))):
        model = model.transform(transform)
        model = model.transform(GiveUniqueNodeNames())
        model = model.transform(GiveReadableTensorNames())
    return model


def test_partitioned_parent_is_read_through_its_dataflow_child(tfc_build, tmp_path):
    from finn.util.basic import get_driver_shapes

    from hw.check.accel_model import AcceleratorModel
    from hw.finn.folding import extract_folding
    from hw.finn.io_description import write_io_description
    from hw.finn.partition import dataflow_model, resolve_final_model
    from hw.driver.io_spec import IOSpec

    build = tmp_path / "build"
    shutil.copytree(tfc_build, build, symlinks=True)
    parent = zynq_partition(build, "Pynq-Z1", tmp_path)
    assert [n.op_type for n in parent.graph.node] == ["StreamingDataflowPartition"] * 3
    parent_path = build / "finn" / "step_deployment_package.onnx"
    parent.save(str(parent_path))

    final, found_parent = resolve_final_model(parent_path, build)
    assert found_parent == parent_path and final == build / "finn" / "dataflow_partition.onnx"
    child = dataflow_model(parent_path)
    before = dataflow_model(build / "finn" / "step_hw_codegen.onnx")
    def compute(model):  # ZynqBuild's InsertDWC adds width converters where auto-folded widths differ
        return [n.op_type for n in model.graph.node if not n.op_type.startswith("StreamingDataWidthConverter")]

    assert compute(child) == compute(before) and compute(child)

    # io.json from the final (child) model, with the DMA shapes FINN's own driver generation derives from the
    # parent, and the host-side score affine of the un-partitioned build (the child carries no metadata).
    from qonnx.core.modelwrapper import ModelWrapper

    io_path = write_io_description(ModelWrapper(str(final)), build / "driver", partitioned_parent=parent_path)
    spec = IOSpec.load(io_path)
    reference = IOSpec.load(tfc_build / "driver" / "io.json")
    assert (spec.output_values, spec.score_scale, spec.score_offset) == \
        (reference.output_values, reference.score_scale, reference.score_offset) == ("popcount", 2, -64)
    finn = get_driver_shapes(parent)
    assert [spec.ishape_normal] == [tuple(s) for s in finn["ishape_normal"]]
    assert [spec.ishape_folded] == [tuple(s) for s in finn["ishape_folded"]]
    assert [spec.ishape_packed] == [tuple(s) for s in finn["ishape_packed"]]
    assert [spec.oshape_folded] == [tuple(s) for s in finn["oshape_folded"]]
    assert [spec.oshape_packed] == [tuple(s) for s in finn["oshape_packed"]]

    # The accelerator model from the final (child) model computes what the un-partitioned one does.
    images = np.random.default_rng(0).integers(0, 256, size=(16,) + spec.ishape_packed[1:], dtype=np.uint8)
    np.testing.assert_array_equal(AcceleratorModel.from_file(final).run(images),
                                  AcceleratorModel.from_file(build / "finn" / "step_hw_codegen.onnx").run(images))
    folding = extract_folding(child)
    assert len(folding) == 1 + len(child.graph.node)
    assert all({"PE", "SIMD"} <= set(folding[n.name]) for n in child.graph.node if n.op_type.startswith("MVAU"))


def test_unpartitioned_reading_of_the_parent_fails_as_the_issue_says(tfc_build, tmp_path):
    """The failure the fix removes: onebit's io.json code on the parent itself."""
    from hw.finn.io_description import write_io_description
    from onebit.errors import OnebitError

    build = tmp_path / "build"
    shutil.copytree(tfc_build, build, symlinks=True)
    parent = zynq_partition(build, "Pynq-Z1", tmp_path)
    with pytest.raises(OnebitError, match="StreamingDataflowPartition_0 .* is not a FINN HW layer"):
        write_io_description(parent, tmp_path / "driver")


def test_finn_launcher_environment_is_set(tmp_path):
    """Everything finn-plus' run_finn.prepare_finn sets for its Tcl templates, in a fresh interpreter."""
    code = ("import sys, os, json; sys.path.insert(0, %r)\n"
            "from hw.finn.env import prepare_finn\n"
            "prepare_finn(%r)\n"
            "print(json.dumps({k: os.environ.get(k) for k in ('FINN_RTLLIB', 'FINN_CUSTOM_HLS', "
            "'XILINX_LOCAL_USER_DATA', 'LD_LIBRARY_PATH', 'PYTHONPATH', 'FINN_BUILD_DIR')}))\n") % (
        str(REPO), str(tmp_path / "work"))
    vivado = tmp_path / "Xilinx" / "Vivado" / "2024.2"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINN_", "XILINX", "LD_LIBRARY"))}
    env.update(HOME=str(tmp_path), XILINX_VIVADO=str(vivado), XILINX_HLS=str(tmp_path / "Xilinx" / "Vitis" / "2024.2"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    values = json.loads(out.stdout.strip().splitlines()[-1])
    rtllib, custom_hls = Path(values["FINN_RTLLIB"]), Path(values["FINN_CUSTOM_HLS"])
    # The folders FINN's Tcl reads: $::env(FINN_RTLLIB)/memstream, $::env(FINN_CUSTOM_HLS) headers.
    assert (rtllib / "memstream").is_dir() and (rtllib / "fifo" / "hdl" / "fifo.sv").is_file()
    assert custom_hls.is_dir() and any(custom_hls.glob("*.hpp"))
    assert values["XILINX_LOCAL_USER_DATA"] == "no"
    assert f"{vivado}/lib/lnx64.o" in values["LD_LIBRARY_PATH"].split(os.pathsep)
    assert f"{tmp_path}/Xilinx/Vitis/2024.2/lnx64/tools/fpo_v7_1" in values["LD_LIBRARY_PATH"].split(os.pathsep)
    assert values["PYTHONPATH"] is not None


def test_io_json_records_accelerator_and_ps_clock_separately(tfc_build, tmp_path):
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.driver.io_spec import IOSpec
    from hw.finn.io_description import PS_FCLK_MHZ, write_io_description

    # The PS clock is the one finn-plus' Zynq shell fixes for both Zynq-7000 and UltraScale+ (its template).
    import finn.transformation.fpgadataflow.templates as shell

    text = Path(shell.__file__).read_text()
    assert re.search(r"PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ \{(\d+)\}", text).group(1) == f"{PS_FCLK_MHZ:.0f}"
    assert re.search(r"PCW_FPGA0_PERIPHERAL_FREQMHZ \{(\d+)\}", text).group(1) == f"{PS_FCLK_MHZ:.0f}"
    # finn-plus-driver sets fclk0 to that fixed PS clock, not to the accelerator clock its settings.json holds.
    dma_overlay = pytest.importorskip("finn_plus_driver.overlays.dma")
    pinned = re.search(r"Clocks\.fclk0_mhz = ([0-9.]+)", Path(dma_overlay.__file__).read_text())
    assert pinned and float(pinned.group(1)) == PS_FCLK_MHZ
    model = ModelWrapper(str(tfc_build / "finn" / "step_hw_codegen.onnx"))
    spec = IOSpec.load(write_io_description(model, tmp_path / "driver", accel_clk_mhz=get_board("ZCU104").clock_mhz))
    assert spec.accel_clk_mhz == 200.0 and spec.fclk_mhz == PS_FCLK_MHZ
    # The build folder's own io.json (written by the pipeline) carries the board clock.
    built = IOSpec.load(tfc_build / "driver" / "io.json")
    assert built.accel_clk_mhz == get_board("Pynq-Z1").clock_mhz and built.fclk_mhz == PS_FCLK_MHZ
    # An io.json written before the accelerator clock was recorded still loads; its fclk_mhz is the PS clock.
    old = json.loads((tfc_build / "driver" / "io.json").read_text())
    old.pop("accel_clk_mhz")
    old["fclk_mhz"] = 100.0
    legacy = IOSpec(old, "old io.json")
    assert legacy.accel_clk_mhz is None and legacy.fclk_mhz == 100.0


def test_overlay_sets_fclk0_to_the_ps_clock_on_a_200mhz_build(tfc_build, tmp_path, monkeypatch):
    pytest.importorskip("pynq")
    import pynq
    from pynq.ps import Clocks

    from hw.driver import overlay as overlay_module
    from hw.driver.io_spec import IOSpec

    data = json.loads((tfc_build / "driver" / "io.json").read_text())
    data["accel_clk_mhz"] = 200.0
    spec = IOSpec(data)
    set_to = {}

    class FakeClocks:  # records the assignment instead of touching a PS
        def __setattr__(self, name, value):
            set_to[name] = value

    def fake_overlay_init(self, bitfile, download=True, device=None):
        self.idma0 = self.odma0 = object()
        self.device = None

    monkeypatch.setattr(pynq.Overlay, "__init__", fake_overlay_init)
    monkeypatch.setattr("pynq.ps.Clocks", FakeClocks())
    monkeypatch.setattr(overlay_module, "allocate", lambda **kw: np.zeros(kw["shape"], np.uint8))
    overlay_module.OnebitOverlay("x.bit", spec, batch_size=1, download=True)
    assert set_to == {"fclk0_mhz": 100.0}
    del Clocks


@pytest.mark.parametrize("board", board_names())
def test_deploy_readme_uses_each_boards_login_and_notebook_folder(board, tmp_path):
    from hw.deploy import _readme

    manifest = {"board": board, "bitfile": "bitfile/finn-accel.bit", "hwh": "bitfile/finn-accel.hwh", "missing": []}
    data = {"labels": np.zeros(3, np.int64), "classes": np.zeros(3, np.int64), "dataset": np.array("fashion-mnist")}
    text = _readme(tmp_path / "tfc", {}, manifest, [], data)
    if board == "KV260":  # Kria-PYNQ on Ubuntu: user ubuntu, notebooks under /home/root with sudo
        assert "ssh ubuntu@<board-ip>" in text and "xilinx@" not in text and "/home/xilinx" not in text
        assert "sudo unzip ~/deploy.zip -d /home/root/jupyter_notebooks/onebit-tfc" in text
        assert "cd /home/root/jupyter_notebooks/onebit-tfc/deploy" in text
    else:
        assert "ssh xilinx@<board-ip>" in text and "/home/xilinx/jupyter_notebooks" in text


@pytest.mark.parametrize("mode", ["auto", "target_fps", "file"])
def test_build_config_is_accepted_by_finn_plus_constructors(mode, tmp_path):
    from finn.builder.build_dataflow_config import DataflowBuildConfig

    from hw.finn.build import _make_config
    from hw.finn.env import prepare_finn, tool_status
    from hw.finn.folding import FoldingSpec, folding_from_file, target_fps

    prepare_finn(tmp_path / "hw")
    (tmp_path / "finn").mkdir()
    if mode == "file":
        (tmp_path / "fold.json").write_text('{"Defaults": {}}')
        spec = folding_from_file(tmp_path / "fold.json")
    else:
        spec = FoldingSpec("auto") if mode == "auto" else target_fps(1000)
    cfg = _make_config(tmp_path, get_board("KV260"), spec, tool_status())
    # finn-plus' own constructors: construct_from on the object and on its JSON serialisation.
    DataflowBuildConfig.construct_from(cfg)
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    again = DataflowBuildConfig.construct_from(tmp_path / "cfg.json")
    assert again.target_fps == cfg.target_fps and again.folding_config_file == cfg.folding_config_file
