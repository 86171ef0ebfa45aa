"""Contract test of the Vivado half of `onebit build`, against a FAKE Xilinx 2024.2 tree (tests/hw/fake_xilinx.py).

What this shows, for every board preset: `onebit build model.pt --board B` runs finn-plus' full step list
through step_deployment_package (ZynqBuild's transforms included), every Vivado / Vitis HLS invocation happens
in finn-plus' order with the Tcl FINN generates, that Tcl finds every environment variable it reads
(FINN_CUSTOM_HLS, FINN_RTLLIB, ...) and every file it adds, and onebit reads the partitioned final model's
dataflow child for io.json (equal to FINN's get_driver_shapes), the accelerator model, folding.json and the
deployment package. What it cannot show: synthesis, timing closure, a real bitfile, the board (docs/docker.md).

XSI is not faked: the two steps that simulate RTL run as ONEBIT_SKIP_RTLSIM=1 documents (FIFOs by FINN's
force_minimal_fifos strategy, step_measure_rtlsim_performance skipped and listed in skipped.txt).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import quant_models.compat  # noqa: F401
from hw.boards import board_names, get_board

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_xilinx import FAKE_MARK, make_fake_xilinx  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
# finn-plus 1.6.1's default flow after code generation, in order (build_dataflow_config.default_build_dataflow_steps).
FINN_TOOL_STEPS = ["step_hw_ipgen", "step_set_fifo_depths", "step_create_stitched_ip",
                   "step_measure_rtlsim_performance", "step_out_of_context_synthesis", "step_prepare_synthesis",
                   "step_synthesize_bitfile", "step_make_driver", "step_deployment_package"]
# What finn-plus' launcher (run_finn.prepare_finn) and FINN's settings put into the environment.
LAUNCHER_ENV = ("FINN_RTLLIB", "FINN_CUSTOM_HLS", "XILINX_LOCAL_USER_DATA", "FINN_BUILD_DIR", "FINN_DEPS",
                "NUM_DEFAULT_WORKERS", "LD_LIBRARY_PATH", "XILINX_VIVADO", "XILINX_HLS")


@pytest.fixture(scope="module")
def fake_tree(tmp_path_factory):
    if not shutil.which("tclsh"):
        pytest.skip("tclsh (Debian package tcl, installed by tools/setup_env.sh) runs the fake tools' Tcl")
    root = tmp_path_factory.mktemp("fake-xilinx")
    fake = make_fake_xilinx(root / "Xilinx")
    deps = root / "finn_deps"  # finn-hlslib is only passed to HLS as -I here: a marked empty stand-in
    for name in ("finn-hlslib", "attention-hlslib", "board_files"):
        (deps / name).mkdir(parents=True)
        (deps / name / "FAKE.txt").write_text(FAKE_MARK + "\n")
    return fake, deps


@pytest.fixture
def fake_environment(fake_tree, monkeypatch):
    """The environment a user gets from sourcing both settings64.sh, restored completely afterwards."""
    fake, deps = fake_tree
    saved = dict(os.environ)
    for key, value in fake.environment().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FINN_DEPS", str(deps))
    monkeypatch.setenv("ONEBIT_SKIP_RTLSIM", "1")
    for key in ("FINN_RTLLIB", "FINN_CUSTOM_HLS", "XILINX_LOCAL_USER_DATA", "FINN_XSI"):
        monkeypatch.delenv(key, raising=False)
    yield fake
    os.environ.clear()
    os.environ.update(saved)


def _mark_steps(fake, monkeypatch):
    """Write a marker into the fake tool log when each FINN tool step starts, to check the interleaving."""
    import finn.builder.build_dataflow_steps as finn_steps

    for step in FINN_TOOL_STEPS:
        original = finn_steps.build_dataflow_step_lookup[step]

        def marked(model, cfg, _step=step, _original=original):
            with open(fake.log, "a") as log:
                log.write(json.dumps({"tool": "onebit", "kind": "step", "name": _step, "args": [], "cwd": ""}) + "\n")
            return _original(model, cfg)

        monkeypatch.setitem(finn_steps.build_dataflow_step_lookup, step, marked)


def _invocations(calls):
    """[(step, tool, script)] for every tool invocation, with the FINN step it happened in."""
    step, rows = None, []
    for call in calls:
        if call["kind"] == "step":
            step = call["name"]
        elif call["kind"] == "invoke":
            rows.append((step, call["tool"], Path(call["name"]).name, call["cwd"]))
    return rows


@pytest.mark.parametrize("board", board_names())
def test_full_flow_under_the_fake_xilinx_tree(board, tfc_build, fake_environment, tmp_path, monkeypatch):
    from finn.util.basic import get_driver_shapes
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from hw.check.accel_model import AcceleratorModel
    from hw.driver.io_spec import IOSpec
    from hw.finn.env import import_finn_steps
    from hw.pipeline import main as build_main

    fake = fake_environment
    fake.log.unlink(missing_ok=True)
    import_finn_steps(tmp_path / "probe")
    _mark_steps(fake, monkeypatch)
    out = tmp_path / board
    # KV260 folds with --auto-fold (its config must pass finn-plus' DataflowBuildConfig.construct_from); the
    # others reuse the session build's folding.json, as a user re-running a build would.
    folding = (["--auto-fold", "--margin", "0.5"] if board == "KV260"
               else ["--folding", str(tfc_build / "folding.json")])
    argv = [str(tfc_build / "model.pt"), "--board", board, "--out", str(out), "--verify-samples", "10",
            "--no-progress", *folding]
    assert build_main(argv) == 0, (out / "build.log").read_text()[-3000:]
    report = json.loads((out / "report.json").read_text())
    calls = fake.calls()

    # Every FINN step ran; only the rtlsim measurement is skipped, as ONEBIT_SKIP_RTLSIM documents.
    run = report["steps"]["run"]
    assert [s for s in run if s in FINN_TOOL_STEPS] == [s for s in FINN_TOOL_STEPS if s != "step_measure_rtlsim_performance"]
    assert [row["step"] for row in report["skipped_steps"]] == ["step_measure_rtlsim_performance"]
    assert "ONEBIT_SKIP_RTLSIM=1" in (out / "skipped.txt").read_text()

    # Tool invocations in finn-plus' order: HLS per HLS layer in step_hw_ipgen, the stitched IP, then in
    # step_synthesize_bitfile the IODMAs' HLS, one stitched IP per partition and finally the Zynq shell.
    inv = _invocations(calls)
    hls_layers = [n.name for n in ModelWrapper(str(out / "finn" / "step_hw_codegen.onnx")).graph.node
                  if n.op_type.endswith("_hls")]
    ipgen = [(t, script) for s, t, script, _ in inv if s == "step_hw_ipgen"]
    assert sorted(ipgen) == sorted(("vitis_hls", f"hls_syn_{name}.tcl") for name in hls_layers) and hls_layers
    assert not [c for c in inv if c[0] in (None, "step_set_fifo_depths")]  # no new HLS layers (FIFOs are RTL)
    assert [(t, script) for s, t, script, _ in inv if s == "step_create_stitched_ip"] == [("vivado", "make_project.tcl")]
    synth = [(t, script, cwd) for s, t, script, cwd in inv if s == "step_synthesize_bitfile"]
    kinds = [("hls" if t == "vitis_hls" else "stitch" if script == "make_project.tcl" else script) for t, script, _ in synth]
    parent = ModelWrapper(str(out / "finn" / "step_deployment_package.onnx"))
    partitions = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    assert len(partitions) == 3
    # ZynqBuild builds the partitions in parallel workers: per partition its HLS (the IODMAs), then its
    # stitched IP; the Zynq shell project last.
    assert sorted(kinds[:-1]) == ["hls", "hls", "stitch", "stitch", "stitch"] and kinds[-1] == "ip_config.tcl", kinds
    for node in partitions:
        inner = [m.name for m in ModelWrapper(getCustomOp(node).get_nodeattr("model")).graph.node]
        stitch = [i for i, (t, script, cwd) in enumerate(synth)
                  if script == "make_project.tcl" and f"vivado_stitch_proj_{inner[0]}_" in cwd]
        assert len(stitch) == 1 or len(inner) > 3, (node.name, inner, synth)
        hls = [i for i, (t, script, cwd) in enumerate(synth) if t == "vitis_hls" and script[8:-4] in inner]
        assert all(i < stitch[0] for i in hls) if len(inner) <= 3 else True
    assert "vivado_zynq_proj_" in synth[-1][2]
    assert not [c for c in inv if c[0] in ("step_measure_rtlsim_performance", "step_make_driver",
                                           "step_deployment_package", "step_prepare_synthesis")]

    # The environment: every $::env read succeeded (an unset one stops the fake like Vivado), and the reads
    # FINN's templates make are there, pointing at folders that exist.
    env_reads = {c["name"] for c in calls if c["kind"] == "env"}
    assert {"FINN_CUSTOM_HLS", "FINN_RTLLIB"} <= env_reads
    assert [c for c in calls if c["kind"] == "missing"] == []
    adds = [c for c in calls if c["kind"] == "cmd" and c["name"] == "add_files" and c["tool"] == "vitis_hls"]
    assert adds and all(any(str(Path(os.environ["FINN_CUSTOM_HLS"])) in a for a in c["args"]) for c in adds)
    for name in LAUNCHER_ENV:
        assert os.environ.get(name), f"{name} is not set in the build's environment"
    assert f"{fake.vivado}/lib/lnx64.o" in os.environ["LD_LIBRARY_PATH"].split(os.pathsep)
    zynq_cmds = [c for c in calls if c["tool"] == "vivado" and c["kind"] == "cmd" and c["cwd"] == synth[-1][2]]
    assert any(c["name"] == "create_project" and get_board(board).fpga_part in c["args"] for c in zynq_cmds)
    assert any(c["name"] == "launch_runs" and "write_bitstream" in c["args"] for c in zynq_cmds)

    # The final model is the partitioned parent; onebit read its dataflow child everywhere.
    assert report["artifacts"]["final_model"].endswith("finn/dataflow_partition.onnx")
    assert report["artifacts"]["partitioned_parent_model"].endswith("finn/step_deployment_package.onnx")
    spec = IOSpec.load(out / "driver" / "io.json")
    assert spec.hw_model == "finn/dataflow_partition.onnx"
    child = ModelWrapper(str(out / spec.hw_model))
    assert not child.get_nodes_by_op_type("StreamingDataflowPartition") and not child.get_nodes_by_op_type("IODMA_hls")
    dataflow = [n for n in partitions if not all(
        m.op_type.startswith("IODMA") for m in ModelWrapper(getCustomOp(n).get_nodeattr("model")).graph.node)]
    assert len(dataflow) == 1
    finn = get_driver_shapes(parent)
    for key, ours in (("ishape_normal", spec.ishape_normal), ("ishape_folded", spec.ishape_folded),
                      ("ishape_packed", spec.ishape_packed), ("oshape_normal", spec.oshape_normal),
                      ("oshape_folded", spec.oshape_folded), ("oshape_packed", spec.oshape_packed)):
        assert [tuple(s) for s in finn[key]] == [ours], key
    assert spec.accel_clk_mhz == get_board(board).clock_mhz and spec.fclk_mhz == 100.0
    # FINN's own driver settings (step_make_driver on the parent) describe the same DMA streams.
    finn_driver = json.loads((out / "driver" / "settings.json").read_text())["driver_information"]
    ours = json.loads((out / "driver" / "io.json").read_text())["io_shape_dict"]
    for key in ("idt", "odt", "idma_names", "odma_names", "ishape_normal", "ishape_folded", "ishape_packed",
                "oshape_normal", "oshape_folded", "oshape_packed"):
        assert finn_driver["io_shape_dict"][key] == ours[key], key
    assert finn_driver["fclk_mhz"] == get_board(board).clock_mhz  # FINN records the accelerator clock there
    folding = json.loads((out / "folding.json").read_text())  # noqa: F841 (shadows the CLI list above)
    assert set(folding) - {"Defaults"} == {n.name for n in child.graph.node}
    assert all("PE" in v for k, v in folding.items() if k.startswith("MVAU"))
    if board == "KV260":  # the folding the auto-fold step chose, as the build config names it
        chosen = json.loads((out / "finn" / "autofold_folding.json").read_text())
        assert {k: v for k, v in chosen.items() if k.startswith("MVAU")} == \
            {k: v for k, v in folding.items() if k.startswith("MVAU")}
    assert report["verification"]["ok"] is True

    # The deployment package holds FINN's bitfile (here the fake's placeholder) and the child's io.json;
    # the accelerator model from the build reproduces the validation set's expected integers exactly.
    deploy = out / "deploy"
    manifest = json.loads((deploy / "manifest.json").read_text())
    assert manifest["bitfile"] == "bitfile/finn-accel.bit" and manifest["hwh"] == "bitfile/finn-accel.hwh"
    assert FAKE_MARK in (deploy / "bitfile" / "finn-accel.bit").read_text()  # clearly not a bitstream
    assert not (deploy / "MISSING.txt").exists()
    assert json.loads((deploy / "driver" / "io.json").read_text())["bitfile"] == "../bitfile/finn-accel.bit"
    with np.load(deploy / "validation" / "validation_set.npz", allow_pickle=False) as data:
        images, scores = data["images"], data["scores"]
    from hw.driver import Accelerator

    accelerator = Accelerator(deploy / "driver" / "io.json", backend="model", model=AcceleratorModel.from_build(out))
    mismatches = int(np.sum(np.any(accelerator.predict(images).scores != scores, axis=1)))
    assert mismatches == 0
    # `onebit validate` (accelerator model through the driver, from io.json's hw_model) on 200 test images.
    from hw.check.validate import main as validate_main

    assert validate_main([str(out), "--limit", "200", "--backend", "model"]) == 0
    validation = json.loads((out / "validation" / "validation.json").read_text())
    assert validation["samples"] == 200 and validation["mismatches"] == 0 and validation["backend"] == "model"
    readme = (deploy / "README.md").read_text()
    assert "No bitstream" not in readme and "Bitstream: `bitfile/finn-accel.bit`" in readme


def test_entrypoint_reports_the_bitstream_flow_for_the_fake_tree(fake_tree, tmp_path):
    fake, deps = fake_tree
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINN_", "XILINX", "LD_LIBRARY"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", HOME=str(tmp_path),
               FINN_XILINX_PATH=str(fake.root), FINN_XILINX_VERSION="2024.2", FINN_DEPS=str(deps),
               ONEBIT_CACHE=str(tmp_path / "cache"), ONEBIT_SKIP_RTLSIM="1")
    result = subprocess.run(["bash", "docker/entrypoint.sh", "bash", "-c",
                             "echo $XILINX_HLS; echo $LD_LIBRARY_PATH; echo $FINN_XSI; command -v vitis_hls vivado"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"using Vitis HLS 2024.2 from {fake.vitis}" in result.stdout  # Vitis/2024.2, not Vitis_HLS
    assert "onebit: full bitstream flow enabled without XSI RTL simulation (ONEBIT_SKIP_RTLSIM=1)" in result.stdout
    assert "NO BITSTREAM" not in result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()[-5:]
    assert lines[0] == str(fake.vitis)
    assert f"{fake.vivado}/lib/lnx64.o" in lines[1].split(":")
    assert lines[2] == str(tmp_path / "cache" / "finn_xsi-2024.2")  # where the running user can write
    assert (tmp_path / "cache" / "finn_xsi-2024.2" / "xsi_bind.cpp").is_file()
    assert lines[3:] == [str(fake.vitis / "bin" / "vitis_hls"), str(fake.vivado / "bin" / "vivado")]
    # Without ONEBIT_SKIP_RTLSIM the missing XSI is loud: no bitstream.
    env.pop("ONEBIT_SKIP_RTLSIM")
    result = subprocess.run(["bash", "docker/entrypoint.sh", "true"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "NO BITSTREAM WILL BE BUILT" in result.stderr and "XSI" in result.stderr


def _module_definitions(path: Path) -> list[str]:
    import re

    return re.findall(r"^\s*module\s+(\w+)", path.read_text(errors="replace"), re.M)


# The CNV case (~4 min: its whole-accelerator FIFO sizing plus the fake Vivado flow) runs with -m rtl_sweep and in
# bench/rtl_stitched_fifos.py (1,000 images); the suite keeps the TFC case under its 15-minute budget.
@pytest.mark.parametrize("which", ["tfc", pytest.param("cnv", marks=pytest.mark.rtl_sweep)])
def test_rtl_build_stitches_onebits_fifo_depths_once_defined(which, tfc_build, cnv_build, tfc_rtl_folding,
                                                            fake_environment, tmp_path, monkeypatch):
    """`--mvau rtl` through the whole Vivado flow (fake tools): the FIFOs FINN stitches (StreamingFIFO nodes of
    the final dataflow partition) are exactly the depths onebit sized by simulation; the rtl_accelerator level
    (run by the build) and a direct run simulate exactly those depths at FINN's estimated cycles per image with
    0 mismatches; every stitched Vivado project defines each module once (onebit's shared sources added once)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from hw.check.rtl_accelerator import run_rtl_accelerator
    from hw.driver.io_spec import IOSpec
    from hw.pipeline import main as build_main
    from hw.rtl.custom_op import SHARED_SV_FOLDER

    if not shutil.which("verilator"):
        pytest.skip("verilator not installed (tools/setup_env.sh): onebit sizes the FIFOs by simulating with it")
    source = tfc_build if which == "tfc" else cnv_build  # session builds: made before the fake environment
    fake = fake_environment
    fake.log.unlink(missing_ok=True)
    monkeypatch.setenv("ONEBIT_LEVELS", "rtl_accelerator")
    out = tmp_path / which
    # TFC: the suite's small --mvau rtl folding (tests/conftest.py: width converters both ways; its Verilator and
    # yosys runs are the other RTL tests', cached), not auto-fold's PE 32 x SIMD 16 first layer (minutes of yosys)
    folding = tfc_rtl_folding if which == "tfc" else source / "folding.json"
    argv = [str(source / "model.pt"), "--board", "Pynq-Z1", "--out", str(out), "--verify-samples", "10",
            "--no-progress", "--mvau", "rtl", "--folding", str(folding)]
    assert build_main(argv) == 0, (out / "build.log").read_text()[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert "step_onebit_fifo_depths" in report["steps"]["run"] and "step_set_fifo_depths" in report["steps"]["run"]

    # onebit's sizing (recorded with the build), FINN's FIFO config file and the stitched graph agree exactly
    sized = report["artifacts"]["fifo_depths"]
    assert sized["source"] == "onebit" and not sized["capped"], sized
    ours = list(sized["depths"].values())
    assert any(d > 2 for d in ours), ours  # sized, not FINN's minimal depths
    finn_config = json.loads((out / "finn" / "onebit_fifo_config.json").read_text())
    assert list(finn_config["fifo_depths"].values()) == ours
    assert list(json.loads((out / "report" / "fifo_sizing.json").read_text())["fifo_depths"].values()) == ours
    child = ModelWrapper(str(out / "finn" / "dataflow_partition.onnx"))
    stitched = [int(getCustomOp(n).get_nodeattr("depth")) for n in child.graph.node if n.op_type.startswith("StreamingFIFO")]
    assert stitched == ours
    level = report["verification"]["levels"]["rtl_accelerator"]
    assert level["executed"] and level["integer_mismatches"] == 0 and "as stitched: FINN's StreamingFIFO nodes" in level["how"]
    if which == "tfc":  # `onebit sweep`'s row of this build (a schema mismatch once failed every --mvau rtl run)
        from onebit.sweep.runner import metrics_of

        (tmp_path / "row").mkdir()
        (tmp_path / "row" / "build").symlink_to(out)  # a sweep run's folder holds its build as build/
        synth, row = report["resources_synth"], metrics_of("build", tmp_path / "row")
        # the whole stitched design (nodes, FIFOs, width converters; hw/rtl/synth_report.py) and its slowest stage
        total = synth["total"]
        assert row["synth_lut"] == total["lut_total"] > synth["nodes"]["OnebitMVAU_rtl_0"]["lut_total"]
        assert row["fmax_mhz"] == min(total["timing"]["stages"].values()) > 0 and row["mismatches"] == 0

    # the stitched design simulated at those depths: FINN's estimated cycles per image, bit-exact
    spec = IOSpec.load(out / "driver" / "io.json")
    images = np.random.default_rng(0).integers(0, 256, size=(16,) + tuple(spec.image_shape), dtype=np.uint8)
    result = run_rtl_accelerator(out, images, chunk=8)
    assert result["fifo_depths"] == sized["depths"] and result["fifo_source"].startswith("as stitched")
    assert result["mismatching"] == []
    assert result["cycles_per_image"] <= 1.05 * result["estimated_bottleneck_cycles"], result["cycles_per_image"]

    # Vivado projects: onebit's shared sources added once each; no module defined in two different files
    calls = fake.calls()
    projects: dict[str, list[str]] = {}
    for call in calls:
        if call["tool"] == "vivado" and call["kind"] == "cmd" and call["name"] == "add_files":
            projects.setdefault(call["cwd"], []).extend(a for a in call["args"] if not a.startswith("-"))
    onebit_projects = {cwd: files for cwd, files in projects.items() if any(SHARED_SV_FOLDER in f for f in files)}
    assert onebit_projects, sorted(projects)
    for cwd, files in onebit_projects.items():
        shared = [f for f in files if SHARED_SV_FOLDER in f]
        assert len(shared) == len(set(shared)), (cwd, shared)
        owners: dict[str, str] = {}
        for path in dict.fromkeys(files):
            if path.endswith((".v", ".sv")):
                for module in _module_definitions(Path(path)):
                    assert owners.setdefault(module, path) == path, f"{module} defined in {owners[module]} and {path}"
        assert "onebit_mvau" in owners and "onebit_skid" in owners
    assert [c for c in calls if c["kind"] == "missing"] == []
    assert (out / "deploy" / "manifest.json").is_file()
    assert report["verification"]["timing"]["status"] == "passed"
    # the yosys table without --compare-unpipelined: every onebit MVAU's row says the comparison was not run
    from hw.rtl.synth_report import UNPIPELINED_NOT_RUN

    synth = report["resources_synth"]
    assert synth["executed"] and synth["unpipelined_comparison"] == {"executed": False, "reason": UNPIPELINED_NOT_RUN}
    mvaus = [c for c in synth["nodes"].values() if "pipelining" in c]
    assert mvaus and all(c["pipelining"]["unpipelined"] == {"not_run": UNPIPELINED_NOT_RUN} for c in mvaus)
    assert UNPIPELINED_NOT_RUN in (out / "report.md").read_text()
