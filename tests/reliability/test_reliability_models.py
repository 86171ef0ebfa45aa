"""Issue 12, items 6, 7, 10, 11, 12: interrupts, NaN/Inf models, one verdict, folding files, bad fields.

Every attack is stated in the test's first docstring line (bench/reliability.py lists them).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import quant_models.compat  # noqa: F401
from onebit.errors import OnebitError
from reliability_helpers import REPO, cli, default_sigint, one_line_error


def _edit_checkpoint(source: Path, target: Path, edit) -> Path:
    data = torch.load(source, weights_only=True)
    edit(data)
    torch.save(data, target)
    return target


def _train_args(out: Path, *extra: str) -> list[str]:
    return ["--model", "tfc", "--epochs", "1", "--limit-train", "300", "--limit-test", "50", "--out", str(out),
            "--quiet", *extra]


# -- 6. Ctrl-C ----------------------------------------------------------------------------------------

def test_ctrl_c_swallowed_by_a_library_during_imports_still_stops_training(tmp_path):
    """Item 6: SIGINT that a library swallows while training imports: training stops, the old model.pt stays."""
    out = tmp_path / "model.pt"
    out.write_bytes(b"the old model")
    script = (
        "import os, signal, sys\n"
        "import quant_models.train as train\n"  # installs the handler before torch/Brevitas, as `onebit train` does
        "try:\n"  # what an import-time probe with a bare `except:` does to a Ctrl-C
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    import time; time.sleep(1)\n"
        "except BaseException:\n"
        "    pass\n"
        f"sys.exit(train.main({_train_args(out)!r}))\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, timeout=300, preexec_fn=default_sigint)
    assert run.returncode == 130 and "interrupted" in run.stderr, (run.returncode, run.stderr[-1500:])
    assert out.read_bytes() == b"the old model"


def test_ctrl_c_early_in_training_leaves_the_old_model(tmp_path):
    """Item 6: a real Ctrl-C 2 s into `python -m quant_models.train`: non-zero exit, the old model.pt untouched."""
    out = tmp_path / "model.pt"
    out.write_bytes(b"the old model")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "quant_models.train", *_train_args(out)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode != 0, err[-1500:]
    assert out.read_bytes() == b"the old model"


# -- 7. NaN / Inf -------------------------------------------------------------------------------------

@pytest.mark.parametrize("tensor,value", [("blocks.1.weight_layer.weight", float("nan")),
                                          ("blocks.0.weight_layer.weight", float("inf")),
                                          ("blocks.2.bn.running_mean", float("nan")),
                                          ("blocks.0.bn.running_var", -1.0)])
def test_non_finite_weights_or_batchnorm_statistics_are_refused(tfc_build, tmp_path, capsys, tensor, value):
    """Item 7: a NaN/Inf weight or BatchNorm statistic in model.pt: the build refuses it naming the tensor."""
    from hw.pipeline import main as build_main

    def poison(data):
        if "weight_layer" in tensor and value == float("inf"):
            data["state_dict"][tensor].fill_(value)  # the all-Inf first layer
        else:
            data["state_dict"][tensor].view(-1)[3] = value

    bad = _edit_checkpoint(tfc_build / "model.pt", tmp_path / "bad.pt", poison)
    out = tmp_path / "out"
    assert build_main([str(bad), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and tensor in err
    assert not out.exists()  # refused at loading, before the build folder is touched


def test_infinite_learning_rate_is_refused(tmp_path):
    """Item 7: `--lr inf` (and nan): one-line error before training, no model.pt written."""
    for lr in ("inf", "nan"):
        line = one_line_error(cli("quant_models.train", *_train_args(tmp_path / "m.pt", "--lr", lr)))
        assert "--lr" in line
    assert not (tmp_path / "m.pt").exists()


def test_training_stops_at_the_first_non_finite_loss_keeping_the_old_model(tmp_path, monkeypatch):
    """Item 7: the loss becomes NaN mid-training: training stops there, the old model.pt is kept."""
    from quant_models.estimators.ste import STEEstimator as STE
    from quant_models.train import main as train_main

    calls = {"n": 0}
    original = STE.extra_loss

    def diverging(self, model):
        calls["n"] += 1
        return original(self, model) + (float("nan") if calls["n"] >= 3 else 0.0)

    monkeypatch.setattr(STE, "extra_loss", diverging)
    out = tmp_path / "model.pt"
    out.write_bytes(b"the last good model")
    with pytest.raises(OnebitError, match=r"loss is nan at epoch 1, step 3"):
        from quant_models.train import TrainConfig, train

        train(TrainConfig(model="tfc", epochs=1, limit_train=500, limit_test=50, out=str(out), progress=False))
    assert out.read_bytes() == b"the last good model"
    assert train_main(_train_args(out)) == 2  # the CLI: one line, exit 2
    assert out.read_bytes() == b"the last good model"


# -- 10. one verdict ----------------------------------------------------------------------------------

def _tie_checkpoint(source: Path, target: Path, images: np.ndarray) -> list[int]:
    """A BatchNorm of the last hidden layer whose threshold lands exactly on a reachable accumulator of image 0:
    float32 PyTorch gives -1 there, the exact integer collapse +1. Returns the drifting image indices."""
    from export.collapse import collapse
    from quant_models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(source)
    x = torch.from_numpy(images).float()
    block, seen = model.blocks[-1], {}
    hook = block.weight_layer.register_forward_hook(lambda m, i, o: seen.__setitem__("z", o.detach()))
    model.integer_scores(x)
    hook.remove()
    z0, bn, rng = float(seen["z"][0, 0]), block.bn, np.random.default_rng(0)
    for _ in range(500):
        var, gamma = np.float32(rng.uniform(0.3, 3.0)), np.float32(rng.uniform(0.3, 3.0))
        mean = np.float32(z0 + rng.uniform(-0.9, 0.9))
        beta = np.float32(float(gamma) / np.sqrt(float(var) + bn.eps) * (float(mean) - z0))  # y(z0) = 0, rounded
        with torch.no_grad():
            bn.running_var[0], bn.weight[0], bn.running_mean[0], bn.bias[0] = float(var), float(gamma), float(mean), float(beta)
            plain, _ = collapse(model, meta)
            drift = np.flatnonzero(np.any(model.integer_scores(x).numpy() != plain.integer_scores(x).numpy(), axis=1))
        if len(drift):
            state = {k: v.clone() for k, v in model.state_dict().items()}
            _edit_checkpoint(source, target, lambda data: data["state_dict"].update(state))
            return [int(i) for i in drift]
    raise AssertionError("no tie found in 500 tries")


def test_tie_at_a_batchnorm_threshold_gives_one_verdict_from_build_and_validate(tfc_build, tmp_path, capsys):
    """Item 10: a BatchNorm threshold exactly on a reachable integer: build and validate agree (pass), drift reported."""
    from export.to_finn import main as to_finn_main
    from hw.check.validate import main as validate_main
    from quant_models.data import load_dataset

    images = load_dataset("fashion-mnist", "test").images[:20]
    drifting = _tie_checkpoint(tfc_build / "model.pt", tmp_path / "tie.pt", images)
    out = tmp_path / "tie"
    assert to_finn_main([str(tmp_path / "tie.pt"), "--out", str(out), "--verify-samples", "20", "--no-progress"]) == 0
    verification = json.loads((out / "report.json").read_text())["verification"]
    assert verification["ok"] and verification["first_divergent_level"] is None
    assert verification["compared_against"] == "pytorch_collapsed"
    drift = verification["collapse_drift"]
    assert drift["images"] == drifting and drift["integer_mismatches"] == len(drifting) and "tie" in drift["explanation"]
    assert all(verification["levels"][lv]["integer_mismatches"] == 0
               for lv in ("pytorch_collapsed", "qonnx", "finn_streamlined", "finn_hw_layers"))
    assert "collapse drift" in capsys.readouterr().out
    assert validate_main([str(out), "--limit", "20", "--backend", "model", "--no-progress"]) == 0
    validation = json.loads((out / "validation" / "validation.json").read_text())
    assert validation["ok"] and validation["mismatches"] == 0
    assert validation["collapse_drift"]["images"] == drifting


# -- 11. folding files --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hw_graph(tfc_build):
    from qonnx.core.modelwrapper import ModelWrapper

    return ModelWrapper(str(tfc_build / "finn" / "step_specialize_layers.onnx"))


@pytest.mark.parametrize("entry,message", [
    ({"MVAU_hls_9": {"PE": 1}}, "no layer named 'MVAU_hls_9' in this build's graph; its layers are MVAU_hls_0"),
    ({"MVAU_hls_0": {"PE": 7}}, "MVAU_hls_0 (MVAU_hls) PE = 7 does not divide MH = 64; legal values: 1, 2, 4, 8, 16, 32, 64"),
    ({"MVAU_hls_0": {"SIMD": 5}}, "SIMD = 5 does not divide MW = 784"),
    ({"MVAU_hls_3": {"PE": 0}}, "MVAU_hls_3 PE = 0; PE must be a positive integer"),
    ({"MVAU_hls_1": {"SIMD": -4}}, "SIMD = -4; SIMD must be a positive integer"),
    ({"MVAU_hls_1": {"ram_style": "huge"}}, "ram_style = 'huge'; legal values: auto, block, distributed, ultra"),
    ({"MVAU_hls_1": {"PEs": 2}}, "has no attribute 'PEs'; its folding attributes are PE, SIMD"),
])
def test_folding_file_entries_are_checked_against_the_graph(hw_graph, entry, message):
    """Item 11: folding files with unknown names, non-divisors, zero/negative or unknown values: the layer is named."""
    from hw.finn.folding_check import FoldingFileError, check_folding_config

    with pytest.raises(FoldingFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_folding_config(hw_graph, {"Defaults": {}, **entry}, "f.json")


def test_build_with_an_unknown_layer_in_the_folding_file_fails_before_folding(tfc_build, tmp_path, capsys):
    """Item 11: `onebit build --folding` naming a layer the graph lacks: rc 2 naming it (was ignored with rc 0)."""
    from hw.pipeline import main as build_main

    config = json.loads((tfc_build / "folding.json").read_text())
    config["MVAU_hls_7"] = config.pop("MVAU_hls_3")
    (tmp_path / "f.json").write_text(json.dumps(config))
    assert build_main([str(tfc_build / "model.pt"), "--folding", str(tmp_path / "f.json"), "--out",
                       str(tmp_path / "b"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "MVAU_hls_7" in err and err.count("\n") == 1 and not (tmp_path / "b" / "report.json").exists()
    (tmp_path / "zero.json").write_text(json.dumps({"MVAU_hls_0": {"PE": 0}}))
    assert build_main([str(tfc_build / "model.pt"), "--folding", str(tmp_path / "zero.json"), "--out",
                       str(tmp_path / "c"), "--no-progress"]) == 2
    assert "PE = 0" in capsys.readouterr().err and not (tmp_path / "c").exists()  # refused before the build


# -- 12. the smaller items ------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,message", [
    ("in_shape", [1, 100000, 100000], "MAX_INPUT_VALUES"),
    ("hidden", [10 ** 6, 64, 64], "MAX_WIDTH"),
    ("input_bits", "eight", "input_bits must be the integer 8 or 1, got 'eight'"),
    ("dropout", "none", "dropout must be a number in"),
    ("num_classes", 10.5, "num_classes must be a positive int"),
])
def test_bad_arch_fields_are_one_line_errors_before_any_allocation(tfc_build, tmp_path, capsys, field, value, message):
    """Item 12: huge in_shape or wrong-typed arch fields in model.pt: one-line error, no traceback, no 2.5 TB allocation."""
    from hw.pipeline import main as build_main

    bad = _edit_checkpoint(tfc_build / "model.pt", tmp_path / "bad.pt", lambda d: d["arch"].__setitem__(field, value))
    started = time.perf_counter()
    assert build_main([str(bad), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and time.perf_counter() - started < 30


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["estimator"].__setitem__("hparams", ["scale", 1]), "hparams list"),
    (lambda d: d.__setitem__("version", "1"), "version '1' is not a version number"),
    (lambda d: d.__setitem__("version", 0), "version 0 is not a version number"),
    (lambda d: d.__setitem__("version", 2), "newer than this onebit reads"),
])
def test_checkpoint_header_fields_are_checked(tfc_build, tmp_path, edit, message):
    """Item 12: hparams as a list, version "1": the right one-line message (not "newer than this onebit reads")."""
    from quant_models.checkpoint import load_checkpoint

    bad = _edit_checkpoint(tfc_build / "model.pt", tmp_path / "bad.pt", edit)
    with pytest.raises(OnebitError, match=message):
        load_checkpoint(bad)


def test_unknown_dataset_in_the_checkpoint_fails_before_the_finn_build(tfc_build, tmp_path, capsys):
    """Item 12: a checkpoint naming dataset `imagenet`: refused at once, not after the whole FINN build."""
    from hw.pipeline import main as build_main

    bad = _edit_checkpoint(tfc_build / "model.pt", tmp_path / "bad.pt",
                           lambda d: d["dataset"].__setitem__("name", "imagenet"))
    assert build_main([str(bad), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_validate_batch_size_and_limit_must_be_whole_positive_numbers(tfc_build, capsys):
    """Item 12: `validate --batch-size 0` (was silently 1000) and 2.7 (was 2): refused."""
    from hw.check.validate import main as validate_main, validate_build
    from hw.driver import Accelerator, DriverError

    assert validate_main([str(tfc_build), "--batch-size", "0", "--no-progress"]) == 2
    assert "--batch-size must be a whole number >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(OnebitError, match="got 2.7"):
        validate_build(tfc_build, batch_size=2.7, write=False, progress=False)
    with pytest.raises(DriverError, match="got 2.7"):
        Accelerator(tfc_build / "driver" / "io.json", backend="model", model=object(), batch_size=2.7)


def test_validate_has_no_progress_option(tfc_build, capsys):
    """Item 12: `onebit validate --no-progress`: accepted, and no progress bar is drawn."""
    from hw.check.validate import main as validate_main

    assert validate_main([str(tfc_build), "--limit", "20", "--backend", "model", "--no-progress"]) == 0
    assert "accelerator (model)" not in capsys.readouterr().err


@pytest.mark.parametrize("values,message", [("float", "must be integers"), ("negative", "outside UINT8"),
                                            ("large", "outside UINT8")])
def test_accelerator_model_refuses_values_outside_its_input_type(tfc_build, values, message):
    """Item 12: `AcceleratorModel.run_values` with floats, negatives or values > 255: refused, not cast."""
    from hw.check.accel_model import AcceleratorModel

    model = AcceleratorModel.from_build(tfc_build)
    shape = (2, *model.shapes["ishape_normal"][1:])
    x = {"float": np.full(shape, 0.5), "negative": np.full(shape, -1), "large": np.full(shape, 256)}[values]
    with pytest.raises(OnebitError, match=message):
        model.run_values(x)
    assert model.run_values(np.zeros(shape, dtype=np.uint8)).shape[0] == 2  # raw pixels still run


def test_malicious_pickles_are_refused_naming_what_they_would_run(tmp_path):
    """Item 12: a model.pt or CIFAR batch whose pickle calls os.system: refused, and the message names posix.system."""
    import pickle

    from quant_models.checkpoint import read_checkpoint
    from quant_models.data import load_dataset

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"format": "onebit-checkpoint", "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(OnebitError, match=r"refused to load: unpickling it would call posix\.system"):
        read_checkpoint(tmp_path / "evil.pt")
    root = tmp_path / "cifar" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    (root / "test_batch").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(OnebitError, match=r"refused to load: unpickling it would call posix\.system"):
        load_dataset("cifar10", "test", tmp_path / "cifar")
    assert not (tmp_path / "pwned").exists()


def test_huge_idx_header_reports_the_declared_size_correctly(tmp_path):
    """Item 12: an idx header declaring 2^32-1 x 2^32-1 x 2^32-1 bytes: the message shows that size, not a negative one."""
    import struct

    from quant_models.data import IDX_MAGIC_IMAGES, read_idx

    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(struct.pack(">I", IDX_MAGIC_IMAGES) + struct.pack(">3I", *[2 ** 32 - 1] * 3) + b"\0" * 10)
    with pytest.raises(OnebitError) as error:
        read_idx(path, IDX_MAGIC_IMAGES)
    assert f"({(2 ** 32 - 1) ** 3} bytes)" in str(error.value) and "-" not in str(error.value).split("bytes")[0][-40:]


def test_data_root_is_recorded_and_accepted_by_build(tmp_path):
    """Item 12: a model trained on `--data-root` data: the root is recorded, the build finds it (and takes --data-root)."""
    from quant_models.data import IDX_FILES, write_idx
    from quant_models.checkpoint import read_checkpoint

    root = tmp_path / "my-mnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("test", 50)):
        images_file, labels_file = IDX_FILES[split]
        write_idx(root / images_file, rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / labels_file, rng.integers(0, 10, n))
    env = {"ONEBIT_DATA": str(tmp_path / "nowhere"), "HOME": str(tmp_path)}  # no other copy of mnist is found
    ckpt = tmp_path / "m.pt"
    run = cli("quant_models.train", "--model", "tfc", "--dataset", "mnist", "--data-root", root, "--epochs", "1",
              "--out", ckpt, "--quiet", env=env)
    assert run.returncode == 0, run.stderr[-1500:]
    assert read_checkpoint(ckpt)["dataset"]["root"] == str(root.resolve())
    # The build finds the data where training did (stopped right after the dataset check and the QONNX export).
    stop = {**env, "ONEBIT_FAULT": "build:after_qonnx:SIGINT"}
    assert cli("hw.pipeline", ckpt, "--out", tmp_path / "b1", "--no-progress", env=stop).returncode == 130
    # A checkpoint without a recorded root: the build's --data-root is the one used (a wrong one: refused at once).
    bare = _edit_checkpoint(ckpt, tmp_path / "bare.pt", lambda d: d["dataset"].pop("root"))
    line = one_line_error(cli("hw.pipeline", bare, "--out", tmp_path / "b2", "--no-progress",
                              "--data-root", tmp_path / "missing", env=stop))
    assert "missing" in line and "not a directory" in line
