"""hw: from a QONNX model to a streaming accelerator, its checks and its board package.

Rooms, in the order data flows (a room imports only rooms before it; tests/test_layout.py checks it):
  boards.py   board presets: part, shell, clocks, AXI port width, budgets (everyone reads it)
  driver/     board-side package (numpy + pynq only; copied onto the board)
  rtl/        onebit's own SystemVerilog blocks, their simulation and synthesis
  finn/       everything that drives finn-plus: environment, fixes, build steps, folding, I/O description
  check/      the verification levels and `onebit validate`
  report.py   report.md / report.json of one build
  deploy.py   the deployment package (`python -m hw.deploy`)
  pipeline.py `onebit build`: the whole pipeline of one build folder

The modules that lived flat in hw/ before the rooms (hw.build, hw.verify, ...) still import, with a
DeprecationWarning naming the new path, so notebooks and user scripts written against them keep working.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

MOVED: dict[str, str] = {
    "hw.build": "hw.pipeline",  # run_pipeline/main; the FINN steps themselves are hw.finn.build
    "hw.finn_env": "hw.finn.env",
    "hw.finn_fixes": "hw.finn.fixes",
    "hw.folding": "hw.finn.folding",
    "hw.autofold": "hw.finn.autofold",
    "hw.io_description": "hw.finn.io_description",
    "hw.verify": "hw.check.verify",
    "hw.accel_model": "hw.check.accel_model",
    "hw.validate": "hw.check.validate",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import an old flat hw/ module name as its new module (the same module object, with a warning).

    Why a finder rather than nine stub files: a stub would be a second module object whose globals
    drift from the real one (monkeypatching one would not affect the other); the import system lets a
    loader put the real module into sys.modules under the old name.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new_name = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new_name}: import {new_name} instead", DeprecationWarning,
                      stacklevel=3)
        if spec.name != "hw.build":
            return importlib.import_module(new_name)
        # hw.build held both halves (FINN steps and the pipeline): a namespace with the names of both.
        combined = types.ModuleType(spec.name, "moved: FINN steps to hw.finn.build, the pipeline to hw.pipeline")
        for source in ("hw.finn.build", "hw.pipeline"):
            combined.__dict__.update({k: v for k, v in vars(importlib.import_module(source)).items()
                                      if not k.startswith("__")})
        return combined

    def exec_module(self, module):
        pass  # the module is the already-executed new one


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
