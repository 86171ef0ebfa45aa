"""The options of one `onebit build`, as one typed object: `BuildOptions`.

The command line (`onebit build`, `onebit export`, `python export/to_finn.py`), the demo, the benchmarks and a
Python caller all hand the pipeline one `BuildOptions` (hw/pipeline.py `run_pipeline(options)`, `build(options)`):

    from onebit import build, BuildOptions
    report = build(BuildOptions("model.pt", board="Pynq-Z2", verify_samples=500))

Every build folder keeps the options it was built with in `onebit_options.json` (schema
`{"schema": "onebit-build-options", "version": 1, "options": {...}}`), and `onebit build --config FILE`
(that file, or a hand-written JSON/YAML one) rebuilds the same; flags given on the command line override it.

Adding an option is one field below: its name is the flag (`verify_samples` <-> `--verify-samples`), its
default the default, `option(...)` carries the help text and the argparse details. `add_arguments` builds the
parser from the fields, `from_namespace`/`from_dict` build the object, `__post_init__` checks each value with a
one-line error. Options that control one run rather than describe the build (`stop_after`, `start_from`) are
marked `saved=False`: they are not written to onebit_options.json.

Imports nothing heavy (argparse, json, hw.boards): `onebit build --help` and a notebook stay fast.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hw.boards import BOARDS, get_board
from onebit.errors import OnebitError

SCHEMA = "onebit-build-options"
VERSION = 1
OPTIONS_FILE = "onebit_options.json"
DEFAULT_PYTHON_SAMPLES = 200  # keeps a CNV build's FINN Python levels near half a minute on 2 cores
LAYOUTS = ("NCHW", "NHWC")  # export/input_declaration.py checks them again against the model

# argparse groups: a mutually exclusive one for the folding choice, a titled one for imported models.
_EXCLUSIVE = {"folding"}
_GROUP_TITLES = {"import": "QONNX model from elsewhere (model.onnx; see README 'Bring your own model')",
                 "steps": "step control (`onebit steps` lists the steps; FINN's names for FINN's steps)"}


class OptionsError(OnebitError):
    """A build option with a bad value, or an options file that is not one."""


def option(default: Any, help: str, *, group: str | None = None, saved: bool = True, positional: bool = False,
           **argparse_kwargs: Any) -> Any:
    """A BuildOptions field: default, help text, argparse group and extra add_argument keywords."""
    return field(default=default, metadata={"help": help, "group": group, "saved": saved,
                                            "positional": positional, "argparse": argparse_kwargs})


@dataclass
class BuildOptions:
    """Everything one `onebit build` needs; see the module docstring. Values are checked on construction."""

    checkpoint: Path | None = option(
        None, "a model.pt written by onebit (quant_models.train), or a QONNX model.onnx (Brevitas export_qonnx, "
        "QONNX zoo) with its input declared; may come from --config", positional=True)
    board: str = option("Pynq-Z1", f"board preset: {', '.join(BOARDS)} (default Pynq-Z1)")
    clock_mhz: float | None = option(
        None, "accelerator clock in MHz (default: the board's, 100 on Zynq-7000, 200 on UltraScale+): FINN's "
        "synthesis clock; folding, the I/O bound, FPS and latency estimates follow it", metavar="F")
    out: Path | None = option(None, "build folder (default build/<checkpoint name>)")
    folding: Path | None = option(None, "FINN folding config JSON (e.g. a build's folding.json)", group="folding",
                                  metavar="FILE")
    target_fps: int | None = option(None, "FINN's folding heuristic (SetFolding) for N frames/s at the clock",
                                    group="folding", metavar="N")
    auto_fold: bool = option(False, "the default: best FPS the board can feed (DMAs included) within its LUT/BRAM "
                             "budget, with the fewest LUT (hw.finn.autofold)", group="folding")
    margin: float | None = option(None, "auto-fold's usable fraction of the board's LUT/BRAM (0 < F <= 1, default 0.8)",
                                  metavar="F")
    mvau: str = option("hls", "matrix-vector and max-pool nodes: FINN's HLS (default) or onebit's own RTL (hw/rtl), "
                       "which Verilator simulates as a whole accelerator and yosys sizes without Xilinx tools",
                       choices=("hls", "rtl"))
    input_packing: str = option(
        "auto", "binary-input networks (--input-bits 1): host = the host thresholds the pixels and packs 8 to a byte, "
        "the DMA carries 1 bit per pixel; none = the accelerator thresholds the byte pixels; auto (default) = host "
        "for binary-input MLPs, none otherwise", choices=("auto", "host", "none"))
    fifo_sizing: str = option(
        "auto", "who sizes the FIFOs FINN stitches in an --mvau rtl build: onebit's whole-accelerator simulation in "
        "Verilator (auto: where it can, the default; onebit: or fail) or FINN's step_set_fifo_depths (finn: XSI "
        "simulation on a Vivado host)", choices=("auto", "onebit", "finn"))
    compare_unpipelined: bool = option(
        False, "--mvau rtl: the report's yosys table also synthesizes every onebit MVAU without its pipelining "
        "(MEM_REG = TREE_STAGES = 0) for LUT / FF / Fmax beside the pipelined node: a second synthesis of each MVAU, "
        "minutes for wide ones (default off: the report says the comparison was not run)")
    verify_samples: int = option(0, "test images verified at the PyTorch levels (default 0 = the whole test set)",
                                 metavar="N")
    python_samples: int = option(
        DEFAULT_PYTHON_SAMPLES, "of those, the first M verified by qonnx's and FINN's Python execution (slow: "
        f"~0.1-0.3 s per CNV image; default {DEFAULT_PYTHON_SAMPLES}, 0 = all N)", metavar="M")
    data_root: Path | None = option(None, "dataset folder for verification (default: the one recorded at training, "
                                    "else as quant_models.data resolves it)")
    levels: str | None = option(None, "hardware levels after the Python levels: rtl_nodes (Verilator), cppsim (FINN "
                                "cppsim, needs finn-hlslib), rtl_accelerator (--mvau rtl builds), all or none "
                                "(default: every level whose tools are found)", metavar="A,B")
    node_samples: int = option(100, "test images through every generated node in the hardware levels (default 100)",
                               metavar="N")
    no_progress: bool = option(False, "no progress bars")
    dataset: str | None = option(None, "test set for verification: mnist, fashion-mnist, cifar10, folder:PATH or "
                                 "npz:PATH (default: the checkpoint's, or the sidecar's for a .onnx model)",
                                 group="import")
    input_scale: str | None = option(None, "the model's input is S * pixel + OFFSET, e.g. 1/255 for torchvision's "
                                     "ToTensor", group="import", metavar="S")
    input_offset: str | None = option(None, "added after the scale (default 0)", group="import", metavar="OFFSET")
    input_shape: str | None = option(None, "image shape, e.g. 1,28,28", group="import", metavar="C,H,W")
    input_layout: str | None = option(None, "layout of the model's 4-D input (default NCHW, as Brevitas/PyTorch "
                                      "export)", group="import", choices=LAYOUTS)
    sidecar: Path | None = option(None, "declaration file (default: <model>.onebit.json next to the model, if present)",
                                  group="import", metavar="JSON")
    stop_after: str | None = option(None, "stop after this FINN/onebit step (its model is finn/STEP.onnx); no "
                                    "verification, no report: the build is unfinished", group="steps", saved=False,
                                    metavar="STEP")
    start_from: str | None = option(None, "start at this step from the previous step's saved finn/<step>.onnx of an "
                                    "earlier run in the same --out (checked against its sha256 record)",
                                    group="steps", saved=False, metavar="STEP")

    def __post_init__(self) -> None:
        for spec in fields(self):
            setattr(self, spec.name, _coerce(spec.name, getattr(self, spec.name), _types()[spec.name]))
        get_board(self.board)  # an unknown board: one line listing the known ones
        if self.clock_mhz is not None and not 0 < self.clock_mhz <= 1000:
            raise OptionsError(f"--clock-mhz must be in (0, 1000] MHz, got {self.clock_mhz:g}; e.g. --clock-mhz 100")
        if self.target_fps is not None and self.target_fps < 1:
            raise OptionsError(f"--target-fps must be a positive number of frames per second, got {self.target_fps}")
        if self.margin is not None and not 0.0 < self.margin <= 1.0:
            raise OptionsError(f"--margin must be a fraction in (0, 1] of the board's LUT/BRAM, got {self.margin}; "
                               "e.g. --margin 0.8")
        chosen = [f"--{n.replace('_', '-')}" for n in ("folding", "target_fps") if getattr(self, n) is not None]
        if self.auto_fold:
            chosen.append("--auto-fold")
        if len(chosen) > 1:
            raise OptionsError(f"{' and '.join(chosen)} are alternatives: choose one way to fold")
        if self.margin is not None and (self.folding is not None or self.target_fps is not None):
            raise OptionsError(f"--margin {self.margin} only applies to auto-fold (the default, or --auto-fold); "
                               f"drop {chosen[0]} or --margin")
        if self.mvau not in ("hls", "rtl"):
            raise OptionsError(f"--mvau must be hls or rtl, got {self.mvau!r}")
        if self.verify_samples < 0:
            raise OptionsError(f"--verify-samples must be >= 0 (0 = whole test set), got {self.verify_samples}")
        if self.python_samples < 0:
            raise OptionsError(f"--python-samples must be >= 0 (0 = every verified image), got {self.python_samples}")
        if self.node_samples < 1:
            raise OptionsError(f"--node-samples must be >= 1, got {self.node_samples}")
        if self.input_layout is not None and self.input_layout.upper() not in LAYOUTS:
            raise OptionsError(f"--input-layout must be NCHW or NHWC, got {self.input_layout!r}")

    # -- building the object ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "options") -> "BuildOptions":
        """From plain values (an options file's "options", a dict in a notebook); unknown keys are refused."""
        names = [spec.name for spec in fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            close = difflib.get_close_matches(unknown[0].replace("-", "_"), names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise OptionsError(f"{where}: unknown option {unknown[0]!r}{hint}; known: {', '.join(names)}")
        return cls(**values)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "BuildOptions":
        """From a parser made by `add_arguments` (attributes it does not know, e.g. --config, are ignored)."""
        names = {spec.name for spec in fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})

    def replace(self, **changes: Any) -> "BuildOptions":
        return self.from_dict({**self.values(saved_only=False), **changes})

    def values(self, saved_only: bool = True) -> dict[str, Any]:
        """Plain JSON values (paths as strings); without the per-run options when saved_only."""
        return {spec.name: _plain(getattr(self, spec.name)) for spec in fields(self)
                if spec.metadata.get("saved", True) or not saved_only}

    # -- the options file ------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"schema": SCHEMA, "version": VERSION, "options": self.values()}, indent=2) + "\n"

    @classmethod
    def read_file(cls, path: str | Path) -> dict[str, Any]:
        """The option values of an options file (JSON or YAML), relative paths resolved against its folder."""
        path = Path(path)
        if not path.is_file():
            raise OptionsError(f"options file {path} does not exist; pass a build folder's {OPTIONS_FILE} or a "
                               "JSON/YAML file with the same keys")
        try:
            text = path.read_text()
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as error:  # OSError, UnicodeDecodeError, json's ValueError, yaml.YAMLError
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            kind = "YAML" if path.suffix.lower() in (".yaml", ".yml") else "JSON"
            raise OptionsError(f"options file {path} is not valid {kind} ({first}); fix it or pass a build "
                               f"folder's {OPTIONS_FILE}") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise OptionsError(f"options file {path} is not a onebit build options file: it needs "
                               f'"schema": "{SCHEMA}", "version": {VERSION} and an "options" object')
        if data.get("version") != VERSION:
            raise OptionsError(f"options file {path} has version {data.get('version')!r}; this onebit reads version "
                               f"{VERSION}")
        extra = sorted(set(data) - {"schema", "version", "options"})
        if extra:
            raise OptionsError(f"options file {path}: unknown top-level key {extra[0]!r}; the options go in \"options\"")
        if not isinstance(data.get("options"), dict):
            raise OptionsError(f"options file {path} has no \"options\" object")
        values = dict(data["options"])
        types = _types()
        for name, value in values.items():
            if isinstance(value, str) and _base(types.get(name)) is Path and not Path(value).expanduser().is_absolute():
                values[name] = str((path.parent / Path(value).expanduser()).resolve())
        cls.from_dict(values, where=f"options file {path}")  # every value checked now, naming the file
        return values

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "BuildOptions":
        return cls.from_dict({**cls.read_file(path), **overrides}, where=f"options file {path}")

    # -- the command line ------------------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, suppress_defaults: bool = False) -> None:
        """One flag per field. suppress_defaults: flags not given stay out of the namespace (so they do not
        override an options file)."""
        groups: dict[str, Any] = {}
        for spec in fields(cls):
            meta = spec.metadata
            group = meta.get("group")
            target = parser
            if group and group not in groups:
                groups[group] = (parser.add_mutually_exclusive_group() if group in _EXCLUSIVE
                                 else parser.add_argument_group(_GROUP_TITLES.get(group, group)))
            if group:
                target = groups[group]
            kwargs = dict(meta.get("argparse", {}))
            kwargs["help"] = meta["help"]
            base = _base(_types()[spec.name])
            if base is bool:
                kwargs["action"] = "store_true"
            elif "choices" not in kwargs:
                kwargs["type"] = base
            kwargs["default"] = argparse.SUPPRESS if suppress_defaults else spec.default
            if meta.get("positional"):  # argparse would store the SUPPRESS marker itself for a positional
                target.add_argument(spec.name, nargs="?", **{**kwargs, "default": None})
            else:
                target.add_argument("--" + spec.name.replace("_", "-"), dest=spec.name, **kwargs)


def options_from_command_line(args: argparse.Namespace) -> BuildOptions:
    """argparse -> BuildOptions in one place: the --config file's values, then the flags given on the
    command line (a folding choice given on the command line replaces the file's folding choice)."""
    given = {spec.name: getattr(args, spec.name) for spec in fields(BuildOptions)
             if getattr(args, spec.name, None) is not None}  # a flag given always has a value
    config = getattr(args, "config", None)
    values: dict[str, Any] = {}
    if config is not None:
        values = BuildOptions.read_file(config)
        if any(name in given for name in ("folding", "target_fps", "auto_fold")):
            for name in ("folding", "target_fps", "auto_fold", "margin"):
                values.pop(name, None)
    values.update(given)
    if values.get("checkpoint") is None:
        raise OptionsError("no model given: pass model.pt (or model.onnx), or --config FILE (a build folder's "
                           f"{OPTIONS_FILE})")
    return BuildOptions.from_dict(values, where=f"options file {config}" if config else "options")


def _types() -> dict[str, Any]:
    global _TYPES
    if _TYPES is None:
        _TYPES = typing.get_type_hints(BuildOptions)
    return _TYPES


_TYPES = None


def _base(hint: Any) -> Any:
    """int for `int | None`, Path for `Path | None`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _coerce(name: str, value: Any, hint: Any) -> Any:
    flag = "--" + name.replace("_", "-") if name != "checkpoint" else "the model"
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise OptionsError(f"{flag} needs a value, got null")
    base = _base(hint)
    if base is bool:
        if isinstance(value, bool):
            return value
        raise OptionsError(f"{flag} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise OptionsError(f"{flag} must be a whole number, got {value!r}")
    if base is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise OptionsError(f"{flag} must be a number, got {value!r}") from None
    if base is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value).expanduser()
        raise OptionsError(f"{flag} must be a path, got {value!r}")
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise OptionsError(f"{flag} must be text, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def resolved(options: BuildOptions) -> BuildOptions:
    """The options as a build records them: absolute paths, the build folder filled in, $ONEBIT_LEVELS (which
    changes the default levels, hw/check/levels.py) written out as --levels, so the file alone rebuilds the same."""
    changes: dict[str, Any] = {}
    for spec in fields(options):
        value = getattr(options, spec.name)
        if isinstance(value, Path):
            changes[spec.name] = value.resolve()
    out = options.out or Path("build") / Path(options.checkpoint).stem
    changes["out"] = Path(out).resolve()
    if options.levels is None and os.environ.get("ONEBIT_LEVELS") is not None:  # the default it stands for
        from hw.check.levels import default_levels

        default_levels()  # a bad $ONEBIT_LEVELS is named as such, before the build
        changes["levels"] = os.environ["ONEBIT_LEVELS"] or "none"
    return dataclasses.replace(options, **changes)


__all__ = ["BuildOptions", "OptionsError", "OPTIONS_FILE", "SCHEMA", "VERSION", "options_from_command_line",
           "resolved"]
