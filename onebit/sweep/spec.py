"""A sweep specification: trainings and builds as grids (list-valued fields) or explicit runs.

    name: tfc-methods                 # default: the spec file's name
    train:                            # optional: quant_models.train options (names as its flags, - or _)
      model: tfc
      estimator: [ste, irnet]         # a list expands the grid
      seed: [0, 1, 2]
      epochs: 10
    build:                            # optional: `onebit build` options (hw/options.py BuildOptions)
      board: [Pynq-Z1, ZCU104]
      margin: [0.5, 0.8]
      verify_samples: 1000
    runs:                             # optional: explicit runs, each {train: {...}} and/or {build: {...}}
      - {build: {checkpoint: model.pt, board: KV260}}
    resources: {train: {num_cpus: 1, num_gpus: 0}, build: {num_cpus: 1}}   # per run, for Ray

With both `train` and `build`, every training gets every build of the build grid, and a build depends on its
training (its checkpoint is the training's model.pt). With `build` alone, `build.checkpoint` names the model.
A value that is itself a list for one option (e.g. `hparam: ["t_min=0.1"]`) is written as a list of lists.

Why a file of our own and not finn-plus' `finn bench` configs: those expand FINN builder configurations for
SLURM job arrays; a onebit sweep also trains, and its builds are onebit's (verification, reports), so its runs
are onebit's own options, as a single build saves them (onebit_options.json).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onebit.errors import OnebitError, first_line

TRAIN_OPTIONS = ("model", "estimator", "hparam", "arch", "dataset", "data_root", "input_bits", "epochs",
                 "batch_size", "lr", "weight_decay", "seed", "device", "limit_train", "limit_test")
SECTIONS = ("name", "train", "build", "runs", "resources")
DEFAULT_RESOURCES = {"train": {"num_cpus": 1, "num_gpus": 0}, "build": {"num_cpus": 1}}
# set by the sweep for each run (the folder layout), never by the spec
MANAGED_BUILD_OPTIONS = ("out", "no_progress", "config")


class SweepSpecError(OnebitError):
    """A sweep spec that cannot be run: the message names the field and what to do."""


@dataclass
class Run:
    """One training or build of the sweep, with its own folder `<sweep>/<kind>/<key>/`."""

    kind: str  # "train" or "build"
    key: str
    params: dict[str, Any]
    depends_on: str | None = None  # the training key a build takes its checkpoint from
    varying: dict[str, Any] = field(default_factory=dict)  # the grid values that name this run

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.key}"


def _normal(name: str) -> str:
    return name.replace("-", "_")


def _grid(section: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """[(params, varying)] over the cartesian product of the list-valued fields, in the spec's order."""
    fixed = {k: v for k, v in section.items() if not isinstance(v, list)}
    axes = [(k, v) for k, v in section.items() if isinstance(v, list)]
    for name, values in axes:
        if not values:
            raise SweepSpecError(f"sweep spec: '{name}' is an empty list; give at least one value")
    combos = itertools.product(*(values for _, values in axes)) if axes else [()]
    out = []
    for combo in combos:
        varying = {name: value for (name, _), value in zip(axes, combo)}
        out.append(({**fixed, **varying}, varying))
    return out


def _key(varying: dict[str, Any], params: dict[str, Any]) -> str:
    """A readable folder name from the grid values, plus a short hash of every parameter (two runs with the
    same varying values but other fixed ones never share a folder)."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    # a path names the run by its file name (the hash keeps runs of two same-named files apart)
    words = [f"{k}-{Path(v).stem if isinstance(v, str) and '/' in v else v}" for k, v in varying.items()]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "", "_".join(words).replace("/", "-"))[:80]
    return f"{readable}_{digest}" if readable else digest


def _check_train(params: dict[str, Any], where: str) -> dict[str, Any]:
    params = {_normal(k): v for k, v in params.items()}
    unknown = sorted(set(params) - set(TRAIN_OPTIONS))
    if unknown:
        raise SweepSpecError(f"sweep spec, {where}: unknown training option(s) {', '.join(unknown)}; known: "
                             f"{', '.join(TRAIN_OPTIONS)}")
    return params


def _check_build(params: dict[str, Any], where: str, has_training: bool) -> dict[str, Any]:
    from hw.options import BuildOptions, OptionsError

    params = {_normal(k): v for k, v in params.items()}
    managed = sorted(set(params) & set(MANAGED_BUILD_OPTIONS))
    if managed:
        raise SweepSpecError(f"sweep spec, {where}: {', '.join(managed)} is set by the sweep (each run builds "
                             "into its own folder); remove it")
    if has_training and "checkpoint" in params:
        raise SweepSpecError(f"sweep spec, {where}: a build after a training takes the training's model.pt; "
                             "remove 'checkpoint' or the 'train' section")
    if not has_training and "checkpoint" not in params:
        raise SweepSpecError(f"sweep spec, {where}: a build without a training needs 'checkpoint' (a model.pt "
                             "or model.onnx)")
    for point, _ in _grid(params):  # every value checked now, one line each, before any run starts
        try:
            BuildOptions.from_dict({**point, "checkpoint": point.get("checkpoint", "model.pt")}, where=where)
        except OptionsError as error:
            raise SweepSpecError(f"sweep spec: {error}") from None
    return params


def read_spec(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"{path}: no such sweep spec; write a YAML or JSON file (see `onebit sweep --help`)")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            spec = json.loads(text)
        else:
            import yaml

            spec = yaml.safe_load(text)
    except Exception as error:  # noqa: BLE001 - any parse error is one line
        raise SweepSpecError(f"{path}: not a readable sweep spec ({first_line(error)})") from None
    if not isinstance(spec, dict):
        raise SweepSpecError(f"{path}: a sweep spec is a mapping with {', '.join(SECTIONS)}")
    unknown = sorted(set(spec) - set(SECTIONS))
    if unknown:
        raise SweepSpecError(f"{path}: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    spec.setdefault("name", path.stem)
    return spec


def expand(spec: dict[str, Any], base: Path | None = None) -> list[Run]:
    """Every run of the spec, trainings before the builds that depend on them. Relative checkpoint and dataset
    paths are taken relative to `base` (the spec file's folder)."""
    runs: list[Run] = []
    seen: dict[str, Run] = {}

    def add(run: Run) -> Run:
        if run.id in seen:
            return seen[run.id]
        seen[run.id] = run
        runs.append(run)
        return run

    def absolute(params: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        for key in keys:
            value = params.get(key)
            if isinstance(value, str) and base is not None and not re.match(r"^(npz|folder):", value) \
                    and not Path(value).is_absolute() and (key != "dataset"):
                params[key] = str((base / value).resolve())
            elif isinstance(value, str) and base is not None and re.match(r"^(npz|folder):", value):
                kind, _, rest = value.partition(":")
                if not Path(rest).is_absolute():
                    params[key] = f"{kind}:{(base / rest).resolve()}"
        return params

    def trainings(section: dict[str, Any], where: str) -> list[Run]:
        section = _check_train(section, where)
        return [add(Run("train", _key(varying, params), absolute(dict(params), ("dataset", "data_root")), None,
                        varying)) for params, varying in _grid(section)]

    def builds(section: dict[str, Any], where: str, after: list[Run], explicit: bool = False) -> None:
        section = _check_build(section, where, bool(after))
        for params, varying in _grid(section):
            if explicit:  # an explicit run is named by its own values (a path by its file name)
                varying = {k: Path(v).name if k in ("checkpoint", "folding") else v for k, v in params.items()
                           if not isinstance(v, (dict, list))}
            params = absolute(dict(params), ("checkpoint", "dataset", "data_root", "folding"))
            if after:
                for training in after:
                    key = f"{training.key}__{_key(varying, params)}"
                    add(Run("build", key, params, training.key, {**training.varying, **varying}))
            else:
                add(Run("build", _key(varying, params), params, None, varying))

    train_section, build_section = spec.get("train"), spec.get("build")
    for name, section in (("train", train_section), ("build", build_section)):
        if section is not None and not isinstance(section, dict):
            raise SweepSpecError(f"sweep spec: '{name}' is a mapping of options to values or lists of values")
    trained = trainings(train_section, "train") if train_section else []
    if build_section:
        builds(build_section, "build", trained)
    for index, entry in enumerate(spec.get("runs") or []):
        where = f"runs[{index}]"
        if not isinstance(entry, dict) or not set(entry) <= {"train", "build"} or not entry:
            raise SweepSpecError(f"sweep spec, {where}: each run is {{train: {{...}}}}, {{build: {{...}}}} or both")
        after = trainings(entry["train"], f"{where}.train") if entry.get("train") else []
        if entry.get("build"):
            builds(entry["build"], f"{where}.build", after, explicit=True)
    if not runs:
        raise SweepSpecError("sweep spec: nothing to run; give a 'train' or 'build' section, or 'runs'")
    return runs


def resources(spec: dict[str, Any], kind: str) -> dict[str, Any]:
    """Ray resources per run of `kind` (num_cpus, num_gpus), the spec's over the defaults."""
    given = (spec.get("resources") or {}).get(kind) or {}
    unknown = sorted(set(given) - {"num_cpus", "num_gpus", "memory"})
    if unknown:
        raise SweepSpecError(f"sweep spec, resources.{kind}: unknown {', '.join(unknown)}; known: num_cpus, "
                             "num_gpus, memory")
    return {**DEFAULT_RESOURCES[kind], **given}
