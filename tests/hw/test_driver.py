"""The board-side driver: imports (numpy + pynq only), input checks, the board backend's error off-board."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hw.driver import Accelerator, DriverError, IOSpec

DRIVER = Path(__file__).resolve().parents[2] / "hw" / "driver"
FORBIDDEN = ("torch", "finn", "onnx", "qonnx", "brevitas", "onebit", "quant_models", "export", "hw")


def test_driver_imports_only_numpy_and_pynq_ast():
    for path in DRIVER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [] if node.level else [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in ("numpy", "pynq", "__future__", "json", "re", "time", "dataclasses", "pathlib", "hashlib", "os",
                               "importlib", "marshal", "typing"), f"{path.name} imports {name}"


def test_driver_package_loads_no_heavy_module(tmp_path):
    # Copied out of the repository as a build does, imported by a fresh interpreter.
    import shutil

    shutil.copytree(DRIVER, tmp_path / "driver", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import sys, driver; bad = sorted(m for m in sys.modules if m.split('.')[0] in %r); "
            "print(bad); raise SystemExit(1 if bad else 0)" % (FORBIDDEN,))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


class Echo:
    """Stand-in model: returns zero output bytes of the right shape (driver-path checks only)."""

    def __init__(self, spec: IOSpec):
        self.spec = spec
        self.seen = None

    def run(self, packed):
        self.seen = packed
        return np.zeros((packed.shape[0],) + self.spec.oshape_packed[1:], np.uint8)


@pytest.fixture
def spec(tfc_build) -> IOSpec:
    return IOSpec.load(tfc_build / "driver" / "io.json")


def test_input_checks_give_one_line_errors(spec):
    acc = Accelerator(spec, backend="model", model=Echo(spec))
    good = np.zeros((2,) + spec.image_shape, np.uint8)
    assert acc.execute(good).shape == (2, spec.num_classes)
    assert acc.execute(good[0]).shape == (1, spec.num_classes)          # one image (C, H, W)
    with pytest.raises(DriverError, match="shape"):
        acc.execute(np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DriverError, match="dtype float32"):
        acc.execute(good.astype(np.float32) / 255)
    with pytest.raises(DriverError, match="outside 0..255"):
        acc.execute(good.astype(np.int16) + 300)
    with pytest.raises(DriverError, match="numpy"):
        acc.execute(good.tolist())
    with pytest.raises(DriverError, match="unknown backend"):
        Accelerator(spec, backend="fpga")
    with pytest.raises(DriverError, match="needs an accelerator model"):
        Accelerator(spec, backend="model")


def test_model_backend_gets_the_exact_dma_bytes(spec):
    echo = Echo(spec)
    acc = Accelerator(spec, backend="model", model=echo, batch_size=3)
    images = np.random.default_rng(1).integers(0, 256, (3,) + spec.image_shape, dtype=np.uint8)
    acc.execute(images)
    # UINT8 input: the DMA bytes are the pixels in stream order, one byte each.
    np.testing.assert_array_equal(echo.seen.reshape(3, -1), images.reshape(3, -1))
    assert acc.throughput_test()["batch_size"] == 3


def test_board_backend_off_board_says_what_to_do(spec, tmp_path):
    bitfile = tmp_path / "finn-accel.bit"
    bitfile.write_bytes(b"\0")
    with pytest.raises(DriverError, match="needs a PYNQ board.*backend='model'"):
        Accelerator(spec, backend="board", bitfile=bitfile)
    with pytest.raises(DriverError, match="no bitfile|not found"):
        Accelerator(spec, backend="board")


def test_io_description_problems_are_clear(tmp_path, spec):
    with pytest.raises(DriverError, match="no I/O description"):
        IOSpec.load(tmp_path)
    (tmp_path / "io.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DriverError, match="not an onebit I/O description"):
        IOSpec.load(tmp_path)
    data = dict(spec.data, version=99)
    with pytest.raises(DriverError, match="schema version 99"):
        IOSpec(data)
