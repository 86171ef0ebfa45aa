"""Step control of a FINN build: `--stop-after STEP`, `--start-from STEP`, and the record that makes resuming safe.

As with finn-plus' `finn build --start/--stop`, a build is the step list of hw/finn/build.py (FINN's step names
for FINN's steps, `step_onebit_*` for onebit's), every step's model saved as `finn/<step>.onnx`. onebit adds
what FINN leaves to the user: `finn/step_record.json` holds, for the run that wrote them, the sha256 of the
input QONNX model and of every step's model, and the fingerprint of what the models depend on (board,
clock, folding choice, mvau, model). `--start-from STEP` loads the previous step's model only if its file
still has the recorded sha256 and the fingerprint is the same as this run's; otherwise it refuses, naming
the difference, because a changed intermediate would silently change the accelerator.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from onebit.atomic import write_text_atomic
from onebit.buildfolder import sha256_file
from onebit.errors import OnebitError

RECORD = "step_record.json"  # in the build folder's finn/
SCHEMA = "onebit-step-record"
VERSION = 1


class StepError(OnebitError):
    """A step name that is not in this build's step list, or a resume the saved models cannot support."""


def normalize(name: str, steps: list[str], skipped: dict[str, str], flag: str) -> str:
    """A step of this build's list (the `step_` prefix may be left out); one line with the closest name if not."""
    candidates = [name, f"step_{name}"]
    for candidate in candidates:
        if candidate in steps:
            return candidate
        if candidate in skipped:
            raise StepError(f"{flag} {name}: {candidate} does not run on this machine ({skipped[candidate]}); "
                            "see skipped.txt")
    close = difflib.get_close_matches(f"step_{name.removeprefix('step_')}", steps, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise StepError(f"{flag} {name}: not a step of this build{hint}; `onebit steps` lists them")


def plan(steps: list[str], skipped: dict[str, str], start_from: str | None,
         stop_after: str | None) -> tuple[int, int]:
    """(index of the first step to run, index after the last one)."""
    first = steps.index(normalize(start_from, steps, skipped, "--start-from")) if start_from else 0
    end = steps.index(normalize(stop_after, steps, skipped, "--stop-after")) + 1 if stop_after else len(steps)
    if end <= first:
        raise StepError(f"--stop-after {stop_after} comes before --start-from {start_from} in the step list")
    return first, end


class StepRecord:
    """finn/step_record.json of one build folder."""

    def __init__(self, out_dir: Path, fingerprint: dict[str, Any], input_sha256: str) -> None:
        self.out_dir = out_dir
        self.data: dict[str, Any] = {"schema": SCHEMA, "version": VERSION, "fingerprint": fingerprint,
                                     "input_sha256": input_sha256, "steps": [], "stopped_after": None,
                                     "complete": False}

    @property
    def path(self) -> Path:
        return self.out_dir / "finn" / RECORD

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.data, indent=1) + "\n")

    def add(self, step: str, model: Path, seconds: float) -> None:
        self.data["steps"].append({"step": step, "model": model.relative_to(self.out_dir).as_posix(),
                                   "sha256": sha256_file(model), "seconds": seconds})
        self.save()

    def resume(self, steps: list[str], first: int) -> tuple[Path, dict[str, float]]:
        """Check the earlier run's record for a start at steps[first]; its saved models' seconds and the model to
        load (the previous step's, or the input QONNX model for the first step)."""
        where = f"{self.path}"
        try:
            old = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise StepError(f"--start-from {steps[first]}: {self.out_dir} has no {RECORD} from an earlier run; build it "
                            "first (with --stop-after if you like), or drop --start-from") from None
        except (OSError, ValueError) as error:
            raise StepError(f"--start-from: {where} is unreadable ({error}); rerun without --start-from") from None
        if not isinstance(old, dict) or old.get("schema") != SCHEMA or old.get("version") != VERSION:
            raise StepError(f"--start-from: {where} is not a onebit step record; rerun without --start-from")
        for key, value in self.data["fingerprint"].items():
            before = old.get("fingerprint", {}).get(key)
            if before != value:
                raise StepError(f"--start-from {steps[first]}: the saved models were built with {key}={before!r}, this "
                                f"run asks {key}={value!r}; rerun without --start-from (or with the earlier options: "
                                f"--config {self.out_dir / 'onebit_options.json'})")
        if old.get("input_sha256") != self.data["input_sha256"]:
            raise StepError(f"--start-from {steps[first]}: model_qonnx.onnx differs from the one the saved steps were "
                            "built from (sha256); rerun without --start-from")
        done = {row.get("step"): row for row in old.get("steps", []) if isinstance(row, dict)}
        missing = [step for step in steps[:first] if step not in done]
        if missing:
            raise StepError(f"--start-from {steps[first]}: the earlier run did not save {missing[-1]} (it stopped or "
                            f"failed before); start from {missing[0]} or earlier")
        if first == 0:
            model = self.out_dir / "model_qonnx.onnx"
        else:
            row = done[steps[first - 1]]
            model = self.out_dir / "finn" / f"{steps[first - 1]}.onnx"
            if not model.is_file():
                raise StepError(f"--start-from {steps[first]}: {model} is missing; start from {steps[first - 1]} or earlier")
            if sha256_file(model) != row.get("sha256"):
                raise StepError(f"--start-from {steps[first]}: {model} differs from the model the earlier run saved "
                                f"(sha256 in {where}): it was changed; rerun without --start-from")
        self.data["steps"] = [done[step] for step in steps[:first]]
        seconds = {step: float(done[step].get("seconds", 0.0)) for step in steps[:first]}
        return model, seconds

    def finish(self, stopped_after: str | None) -> None:
        self.data["stopped_after"] = stopped_after
        self.data["complete"] = stopped_after is None
        self.save()


def read_record(out_dir: str | Path) -> dict[str, Any] | None:
    """The step record of a build folder, None where there is none or it is unreadable."""
    try:
        data = json.loads((Path(out_dir) / "finn" / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


def describe(steps: list[str], onebit_steps: set[str], skipped: dict[str, str]) -> str:
    """The step list as `onebit steps` prints it."""
    lines = []
    for index, step in enumerate(steps, 1):
        note = "onebit" if step in onebit_steps else "FINN"
        if step in skipped:
            note += f"; not run here: {skipped[step]}"
        lines.append(f"{index:2d}. {step:<36} ({note})")
    return "\n".join(lines)
