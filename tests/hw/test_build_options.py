"""A build is reproducible from its options file and resumable by step (hw/options.py, hw/finn/steps.py).

Real TFC builds of the session checkpoint (tests/conftest.py), small sample counts: the saved
onebit_options.json rebuilds the same report; --stop-after then --start-from gives the one-run result and
refuses a changed intermediate; a Python caller builds through BuildOptions; --clock-mhz moves the estimates.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hw.options import OPTIONS_FILE, SCHEMA, BuildOptions, OptionsError
from hw.pipeline import main as build_main

SAMPLES = "60"


def _comparable(build_dir: Path) -> dict:
    """What must not change between two builds of the same options: estimates, folding, resources,
    accelerator I/O, and per level the sample and mismatch counts (not the seconds or paths)."""
    report = json.loads((build_dir / "report.json").read_text())
    levels = {name: {k: row.get(k) for k in ("executed", "samples", "integer_mismatches", "argmax_mismatches",
                                             "accuracy")}
              for name, row in report["verification"]["levels"].items()}
    estimate = {k: v for k, v in report["estimate"].items()}
    return {"estimate": estimate, "layers": report["layers"], "resources": report["resources"],
            "io_bound": report["io_bound"], "bottleneck": report["bottleneck"], "board": report["board"],
            "accelerator_io": report["accelerator_io"], "folding_mode": report["folding"]["mode"],
            "folding": json.loads((build_dir / "folding.json").read_text()), "levels": levels,
            "ok": report["verification"]["ok"], "accuracy": report["accuracy"]}


@pytest.fixture(scope="module")
def first_build(tfc_build: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("options") / "a"
    assert build_main([str(tfc_build / "model.pt"), "--out", str(out), "--verify-samples", SAMPLES,
                       "--no-progress"]) == 0
    return out


def test_build_folder_keeps_its_options_and_finns_config(first_build: Path, tfc_build: Path) -> None:
    saved = json.loads((first_build / OPTIONS_FILE).read_text())
    assert saved["schema"] == SCHEMA and saved["version"] == 1
    options = saved["options"]
    assert options["checkpoint"] == str((tfc_build / "model.pt").resolve()) and options["out"] == str(first_build)
    assert options["verify_samples"] == int(SAMPLES) and options["board"] == "Pynq-Z1"
    assert "stop_after" not in options and "start_from" not in options  # per-run controls are not saved
    assert set(options) == set(BuildOptions().values())  # complete: every saved field
    owned = json.loads((first_build / ".onebit-build.json").read_text())["owned"]
    assert owned[OPTIONS_FILE]["files"] == [OPTIONS_FILE] and "dataflow_build_config.json" in owned
    from finn.builder.build_dataflow_config import DataflowBuildConfig

    cfg = DataflowBuildConfig.from_json((first_build / "dataflow_build_config.json").read_text())
    assert cfg.synth_clk_period_ns == 10.0 and cfg.output_dir == str(first_build)
    assert Path(cfg.folding_config_file).name == "autofold_folding.json"
    report = json.loads((first_build / "report.json").read_text())
    assert report["options"] == options


def test_rebuild_from_saved_options_gives_the_same_report(first_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert build_main(["--config", str(first_build / OPTIONS_FILE), "--out", str(out)]) == 0  # --out overrides
    assert _comparable(out) == _comparable(first_build)
    again = json.loads((out / OPTIONS_FILE).read_text())["options"]
    before = json.loads((first_build / OPTIONS_FILE).read_text())["options"]
    assert again == {**before, "out": str(out)}


def test_stop_after_then_start_from_equals_one_run(first_build: Path, tfc_build: Path, tmp_path: Path,
                                                   capsys) -> None:
    out = tmp_path / "c"
    assert build_main([str(tfc_build / "model.pt"), "--out", str(out), "--verify-samples", SAMPLES, "--no-progress",
                       "--stop-after", "specialize_layers"]) == 0
    said = capsys.readouterr().out
    assert "--start-from step_onebit_auto_fold" in said
    assert not (out / "report.json").exists() and not (out / "deploy").exists()  # does not look finished
    assert (out / "finn" / "step_specialize_layers.onnx").is_file()
    assert not (out / "finn" / "step_onebit_auto_fold.onnx").exists()
    from hw.check.validate import main as validate_main

    assert validate_main([str(out)]) == 2
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and "stopped after step_specialize_layers" in message[0]

    # a changed intermediate is refused, by its sha256 in finn/step_record.json
    saved = out / "finn" / "step_specialize_layers.onnx"
    original = saved.read_bytes()
    saved.write_bytes(original + b"\0")
    assert build_main(["--config", str(out / OPTIONS_FILE), "--start-from", "step_onebit_auto_fold"]) == 2
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and "step_specialize_layers.onnx differs" in message[0]
    saved.write_bytes(original)
    # other options than the saved models were built with are refused too
    assert build_main(["--config", str(out / OPTIONS_FILE), "--start-from", "step_onebit_auto_fold",
                       "--board", "Pynq-Z2"]) == 2
    assert "built with board='Pynq-Z1', this run asks board='Pynq-Z2'" in capsys.readouterr().err

    assert build_main(["--config", str(out / OPTIONS_FILE), "--start-from", "step_onebit_auto_fold"]) == 0
    assert _comparable(out) == _comparable(first_build)
    report = json.loads((out / "report.json").read_text())
    assert report["artifacts"]["steps_reused"][-1] == "step_specialize_layers"
    assert report["steps"]["run"] == json.loads((first_build / "report.json").read_text())["steps"]["run"]
    assert validate_main([str(out), "--backend", "model", "--limit", "20", "--no-progress"]) == 0


def test_python_caller_and_clock(first_build: Path, tfc_build: Path, tmp_path: Path) -> None:
    """`from onebit import build, BuildOptions` from a notebook; --clock-mhz 50 with the same folding halves the
    FPS estimate, doubles the latency and the I/O bound follows."""
    import onebit
    from onebit import BuildOptions as Exported

    assert Exported is BuildOptions
    options = BuildOptions(tfc_build / "model.pt", out=tmp_path / "d", verify_samples=int(SAMPLES), no_progress=True,
                           folding=first_build / "folding.json")
    report = onebit.build(options, clock_mhz=50)
    assert report["artifacts"]["build_dir"] == str(tmp_path / "d") and report["verification"]["ok"]
    base = json.loads((first_build / "report.json").read_text())
    assert report["estimate"]["clock_mhz"] == 50 and report["board"]["clock_mhz"] == 50
    assert report["options"]["clock_mhz"] == 50.0
    assert report["estimate"]["fps"] == pytest.approx(base["estimate"]["fps"] / 2)
    assert report["estimate"]["latency_us"] == pytest.approx(base["estimate"]["latency_us"] * 2)
    assert report["io_bound"]["fps"] == pytest.approx(base["io_bound"]["fps"] / 2)
    assert [r["cycles"] for r in report["layers"]] == [r["cycles"] for r in base["layers"]]
    cfg = json.loads((tmp_path / "d" / "dataflow_build_config.json").read_text())
    assert cfg["synth_clk_period_ns"] == 20.0
    io = json.loads((tmp_path / "d" / "driver" / "io.json").read_text())
    assert io["accel_clk_mhz"] == 50.0


# ---- the options file and the command line, without a build ----------------------------------------

def test_yaml_config_with_command_line_override(tmp_path: Path) -> None:
    import argparse

    from hw.options import options_from_command_line
    from hw.pipeline import add_pipeline_arguments

    (tmp_path / "model.pt").write_bytes(b"")
    config = tmp_path / "build.yaml"
    config.write_text(f"schema: {SCHEMA}\nversion: 1\noptions:\n  checkpoint: model.pt\n  board: Pynq-Z2\n"
                      "  target_fps: 5000\n  verify_samples: 300\n")
    parser = argparse.ArgumentParser()
    add_pipeline_arguments(parser, suppress_defaults=True)
    options = options_from_command_line(parser.parse_args(["--config", str(config), "--verify-samples", "20",
                                                           "--auto-fold", "--margin", "0.5"]))
    assert options.checkpoint == tmp_path / "model.pt"  # relative to the file
    assert options.board == "Pynq-Z2" and options.verify_samples == 20  # file, then the flag
    assert options.target_fps is None and options.auto_fold and options.margin == 0.5  # the folding choice replaced
    assert options.python_samples == 200  # neither: the default


@pytest.mark.parametrize("content, expected", [
    ('{"schema": "onebit-build-options", "version": 1, "options": {"verfy_samples": 3}}', "did you mean verify_samples"),
    ('{"board": "Pynq-Z1"}', "not a onebit build options file"),
    ('{"schema": "onebit-build-options", "version": 7, "options": {}}', "version 7"),
    ('{"schema": "onebit-build-options", "version": 1, "options": {"verify_samples": "many"}}', "whole number"),
    ('{"schema": "onebit-build-options", "version": 1, "options": {"clock_mhz": -5}}', "--clock-mhz"),
    ("{not json", "not valid JSON"),
])
def test_bad_config_is_one_line_exit_2(tmp_path: Path, capsys, content: str, expected: str) -> None:
    config = tmp_path / "opts.json"
    config.write_text(content)
    assert build_main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onebit: ") and expected in err[0], err
    assert not (tmp_path / "build").exists()


def test_bad_option_values_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="--target-fps and --folding|--folding and --target-fps"):
        BuildOptions("m.pt", folding=tmp_path / "f.json", target_fps=10)
    with pytest.raises(OptionsError, match="did you mean node_samples"):
        BuildOptions.from_dict({"checkpoint": "m.pt", "node_sample": 3})
    assert BuildOptions("m.pt").replace(board="ZCU104").board == "ZCU104"


def test_steps_are_listed_and_unknown_steps_refused(tfc_build: Path, tmp_path: Path, capsys) -> None:
    from onebit.cli import main as onebit_main

    assert onebit_main(["steps", "--mvau", "rtl"]) == 0
    listed = capsys.readouterr().out
    for step in ("step_qonnx_to_finn", "step_onebit_uint8_input", "step_onebit_auto_fold", "step_onebit_rtl_nodes",
                 "step_hw_codegen", "step_synthesize_bitfile"):
        assert step in listed
    assert build_main([str(tfc_build / "model.pt"), "--out", str(tmp_path / "e"), "--stop-after", "streamlin"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean step_streamline" in err[0]
    assert build_main([str(tfc_build / "model.pt"), "--out", str(tmp_path / "f"), "--start-from", "hw_codegen"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--start-from" in err[0] and "rerun without --start-from" in err[0]
