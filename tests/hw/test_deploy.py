"""hw/deploy.py: the deployment package's validation set, its board-side check, atomicity, bitstream handling, errors.

One real `onebit build` (TFC-w1a1 on Pynq-Z1, the session fixture's tiny-trained checkpoint) is packaged;
tests that change a build folder work on a copy.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import quant_models.compat  # noqa: F401  (Brevitas on torch 2.13)
import hw.deploy as deploy
from hw.pipeline import main as build_main
from hw.deploy import DeployError, make_deployment_package
from onebit.errors import OnebitError


@pytest.fixture(scope="module")
def built(tfc_build, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deploy") / "tfc-pynq-z1"
    assert build_main([str(tfc_build / "model.pt"), "--board", "Pynq-Z1", "--out", str(out),
                       "--verify-samples", "50", "--no-progress"]) == 0
    return out


@pytest.fixture
def build_copy(built, tmp_path) -> Path:
    copy = tmp_path / built.name
    shutil.copytree(built, copy, ignore=shutil.ignore_patterns("hw", "intermediate_models"))
    return copy


def _board_script(deploy_dir: Path):
    """Import deploy/validate_on_board.py as the board would run it (its own `driver` package on sys.path)."""
    for name in [m for m in sys.modules if m == "driver" or m.startswith("driver.")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location(f"validate_on_board_{id(deploy_dir)}", deploy_dir / "validate_on_board.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record_full_flow(build: Path) -> None:
    """Make report.json say the Vivado steps ran, as a full-flow build's does (steps.run)."""
    from hw.finn.build import TOOL_STEPS

    report = json.loads((build / "report.json").read_text())
    report["steps"]["run"] += [step for step, _ in TOOL_STEPS]
    (build / "report.json").write_text(json.dumps(report))


def _leftovers(build: Path) -> list[str]:
    return sorted(p.name for p in build.iterdir() if p.name.startswith(".deploy") or p.name.startswith("deploy"))


def test_validation_set_is_software_output_and_equals_accelerator_model(built):
    from hw.check.accel_model import AcceleratorModel
    from hw.check.validate import software_scores
    from quant_models.data import load_dataset

    with np.load(built / "deploy" / "validation" / "validation_set.npz", allow_pickle=False) as npz:
        stored = {key: npz[key] for key in npz.files}
    n = deploy.DEFAULT_SAMPLES
    test = load_dataset("fashion-mnist", "test")
    assert stored["images"].dtype == np.uint8 and stored["scores"].dtype == np.int64
    np.testing.assert_array_equal(stored["images"], test.images[:n])
    np.testing.assert_array_equal(stored["labels"], test.labels[:n])
    np.testing.assert_array_equal(stored["scores"], software_scores(built, test.images[:n]))
    np.testing.assert_array_equal(stored["classes"], stored["scores"].argmax(axis=1))
    assert str(stored["dataset"]) == "fashion-mnist" and len(stored["class_names"]) == 10

    # The board-side script, with the accelerator model in place of the board: every sample bit-exact.
    module = _board_script(built / "deploy")
    accelerator = module.Accelerator(built / "deploy" / "driver" / "io.json", backend="model",
                                     model=AcceleratorModel.from_build(built))
    result = module.compare(accelerator, module.load_set(built / "deploy"))
    assert result["samples"] == n and result["mismatches"] == 0 and result["class_mismatches"] == 0
    assert result["accuracy"] == result["expected_accuracy"] == float(np.mean(stored["classes"] == stored["labels"]))

    # ...and it does catch a wrong expected integer.
    tampered = dict(stored, scores=stored["scores"].copy())
    tampered["scores"][7, 3] += 2
    result = module.compare(accelerator, tampered)
    assert result["mismatches"] == 1 and result["first_mismatches"] == [7]


def test_board_script_without_bitstream_exits_2(built, capsys):
    module = _board_script(built / "deploy")
    assert module.main([]) == 2
    assert "no bitstream" in capsys.readouterr().err


def test_readme_quotes_the_report(built):
    report = json.loads((built / "report.json").read_text())
    readme = (built / "deploy" / "README.md").read_text()
    assert f"{report['estimate']['fps']:,.0f} images/s" in readme
    assert f"{report['accuracy']:.2%}" in readme
    assert "PYNQ-Z1 image" in readme and "pip" in readme and "python3 validate_on_board.py" in readme


@pytest.mark.parametrize("fail_in", ["validation_set", "_write_zip"])
def test_interrupted_package_leaves_nothing_that_looks_complete(build_copy, monkeypatch, fail_in):
    assert (build_copy / "deploy" / "manifest.json").is_file()  # an old, complete package is there

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(deploy, fail_in, boom)
    old = {p: p.read_bytes() for p in [build_copy / "deploy.zip", *(build_copy / "deploy").rglob("*.*")]}
    with pytest.raises(KeyboardInterrupt):
        make_deployment_package(build_copy, samples=10, progress=False)
    # No temporary folder or zip; the old, complete package is kept untouched (issue 12: a failed
    # repackaging must not delete a good package; `onebit build` removes the previous build's package itself).
    assert _leftovers(build_copy) == ["deploy", "deploy.zip"]
    assert {p: p.read_bytes() for p in old} == old
    monkeypatch.undo()
    make_deployment_package(build_copy, samples=10, progress=False)
    assert _leftovers(build_copy) == ["deploy", "deploy.zip"]
    assert json.loads((build_copy / "deploy" / "manifest.json").read_text())["validation_set"]["samples"] == 10


@pytest.mark.parametrize("where", ["bitfile", "deploy/bitfile"])
def test_bitstream_where_finn_wrote_it_is_packaged_and_named(build_copy, where):
    # Stand-in bytes at FINN's output paths (step_synthesize_bitfile -> bitfile/, step_deployment_package ->
    # deploy/bitfile/): this checks the packaging, not a bitstream.
    _record_full_flow(build_copy)
    folder = build_copy / where
    folder.mkdir(parents=True)
    (folder / "finn-accel.bit").write_bytes(b"\x00\x09bitstream stand-in")
    (folder / "finn-accel.hwh").write_text("<hwh stand-in/>")
    make_deployment_package(build_copy, samples=5, progress=False)
    target = build_copy / "deploy"
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["bitfile"] == "bitfile/finn-accel.bit" and manifest["hwh"] == "bitfile/finn-accel.hwh"
    assert not any(m["path"].startswith("bitfile/") for m in manifest["missing"])
    sha = {e["path"]: e["sha256"] for e in manifest["files"]}
    assert sha["bitfile/finn-accel.bit"] == hashlib.sha256(b"\x00\x09bitstream stand-in").hexdigest()
    # The driver resolves io.json's bitfile relative to io.json: it must be the packaged file.
    io = json.loads((target / "driver" / "io.json").read_text())
    assert (target / "driver" / io["bitfile"]).resolve() == (target / "bitfile" / "finn-accel.bit").resolve()
    readme = (target / "README.md").read_text()
    assert "No bitstream" not in readme and "bitfile/finn-accel.bit" in readme
    assert json.loads((build_copy / "report.json").read_text())["deploy"]["bitfile"] == "bitfile/finn-accel.bit"
    assert (build_copy / "bitfile" / "finn-accel.bit").is_file()  # FINN's copy survives the repackaging


def test_bit_without_hwh_is_not_a_usable_package(build_copy):
    _record_full_flow(build_copy)
    (build_copy / "bitfile").mkdir()
    (build_copy / "bitfile" / "finn-accel.bit").write_bytes(b"stand-in")
    make_deployment_package(build_copy, samples=5, progress=False)
    manifest = json.loads((build_copy / "deploy" / "manifest.json").read_text())
    assert manifest["bitfile"] == "bitfile/finn-accel.bit" and manifest["hwh"] is None
    assert "bitfile/finn-accel.hwh" in (build_copy / "deploy" / "MISSING.txt").read_text()


def test_bitstream_of_an_earlier_build_is_not_packaged(build_copy):
    # FINN leaves bitfile/ in place; this (Vivado-less) build did not make it, so it must not be claimed.
    (build_copy / "bitfile").mkdir()
    (build_copy / "bitfile" / "finn-accel.bit").write_bytes(b"stand-in")
    (build_copy / "bitfile" / "finn-accel.hwh").write_text("<hwh/>")
    make_deployment_package(build_copy, samples=5, progress=False)
    manifest = json.loads((build_copy / "deploy" / "manifest.json").read_text())
    assert manifest["bitfile"] is None and not (build_copy / "deploy" / "bitfile").exists()
    assert "from an earlier build" in (build_copy / "deploy" / "MISSING.txt").read_text()


@pytest.mark.parametrize("remove,message", [("report.json", "no report.json"), ("driver/io.json", "no driver/io.json"),
                                            ("driver/__init__.py", "not the onebit driver package")])
def test_unfinished_build_is_a_clear_error(build_copy, remove, message, capsys):
    (build_copy / remove).unlink()
    manifest = (build_copy / "deploy" / "manifest.json").read_bytes()
    with pytest.raises(DeployError, match=message):
        make_deployment_package(build_copy, progress=False)
    # the existing package is kept as it was (issue 12), no temporaries are left
    assert (build_copy / "deploy" / "manifest.json").read_bytes() == manifest
    assert _leftovers(build_copy) == ["deploy", "deploy.zip"]
    assert deploy.main([str(build_copy), "--no-progress"]) == 2
    err = capsys.readouterr().err
    # the command checks the build's integrity record first (issue 23): a listed file that is gone is named so
    expected = message if remove == "report.json" else f"{remove} is missing but report.json's integrity record"
    assert err.startswith("onebit: ") and expected in err and err.count("\n") == 1


def test_cli_repackages_and_rejects_bad_input(build_copy, tmp_path, capsys):
    assert deploy.main([str(build_copy), "--samples", "3", "--no-progress"]) == 0
    assert "bitfile: none, see MISSING.txt" in capsys.readouterr().out
    with np.load(build_copy / "deploy" / "validation" / "validation_set.npz") as npz:
        assert npz["images"].shape[0] == 3
    assert deploy.main([str(tmp_path / "nope")]) == 2
    assert "no such build folder" in capsys.readouterr().err
    with pytest.raises(OnebitError, match="at least 1 image"):
        make_deployment_package(build_copy, samples=0, progress=False)
