"""The deployment package of a build: `build/<name>/deploy/` and `build/<name>/deploy.zip`, what goes to the board.

    deploy/
      bitfile/finn-accel.bit, finn-accel.hwh   where FINN's step_synthesize_bitfile wrote them (Vivado only)
      driver/                                  the onebit driver package + io.json (numpy + pynq only)
      notebooks/                               the project's notebooks
      validation/validation_set.npz            N test images (uint8), labels, and the integer scores and class
                                               indices the collapsed PyTorch model gives for them
      validate_on_board.py                     numpy + driver only: runs the set on the board, compares integers
      report.md, report.json                   the build's report (accuracy, estimated FPS, resources)
      README.md                                how to use it on the board
      MISSING.txt                              only without Vivado: which files are missing, why, how to get them
      manifest.json                            every file with its sha256; "bitfile": null where none exists

Where finn-plus 1.6.1 puts the bitstream (finn/builder/build_dataflow_steps.py): step_synthesize_bitfile
copies it to `<output_dir>/bitfile/finn-accel.bit` and, for Zynq, the hardware handoff to
`<output_dir>/bitfile/finn-accel.hwh`; step_deployment_package copies that folder to `<output_dir>/deploy/bitfile`.
The build's output_dir is the build folder, so FINN's deployment folder and ours share the name `deploy/`:
ours replaces FINN's (it holds the same bitfile/ and the onebit driver instead of FINN's generic one).

Atomic: everything is written into a hidden temporary folder (`.deploy.tmp-<pid>`), manifest.json last, then
renamed to `deploy/`; the zip is written under a temporary name and renamed. The old package is replaced only
when the new one is complete (a failed `python -m hw.deploy` keeps it); `onebit build` removes the previous
build's package before it starts. A killed run's temporaries are removed by the next run.

Why one file (over ~500 lines): the package's parts (the board script's text, README, MISSING.txt, manifest)
are written together into one temporary folder that is renamed at once; they change together.

`make_deployment_package(build_dir)` is called by `onebit build` after verification and the report;
`python -m hw.deploy BUILD_DIR` re-makes the package of an existing build (e.g. after a Vivado run).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # `python hw/deploy.py ...` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onebit import faults, temporaries
from onebit.atomic import write_atomic, write_text_atomic
from onebit.errors import OnebitError, cli_errors
from onebit.invocation import program_name

FORMAT = "onebit-deploy"
VERSION = 1
DEFAULT_SAMPLES = 100
BITFILE = "finn-accel.bit"  # FINN's names (build_dataflow_steps.copy_and_rename_bitfiles)
HWH = "finn-accel.hwh"
REPO_ROOT = Path(__file__).resolve().parents[1]
# A checkout has them beside hw/; an installed package (pyproject's data-files) under <prefix>/share/onebit.
NOTEBOOKS_DIR = next((d for d in (REPO_ROOT / "notebooks", Path(sys.prefix) / "share" / "onebit" / "notebooks")
                      if d.is_dir()), REPO_ROOT / "notebooks")
# The PYNQ images the boards run (pynq.io board pages); the driver needs only numpy and pynq from them.
PYNQ_IMAGES = {
    "Pynq-Z1": "the PYNQ-Z1 image v3.0.1 or later from pynq.io",
    "Pynq-Z2": "the PYNQ-Z2 image v3.0.1 or later from pynq.io",
    "Ultra96-V2": "the Ultra96-V2 PYNQ image v3.0.1 or later (Avnet, linked from pynq.io)",
    "ZCU104": "the ZCU104 PYNQ image v3.0.1 or later from pynq.io",
    "KV260": "Ubuntu 22.04 for Kria with Kria-PYNQ v3.0 or later installed (github.com/Xilinx/Kria-PYNQ)",
}

# How each board's image is reached: (login user, Jupyter notebook folder, the folder is root's). The PYNQ
# images log in as `xilinx` with notebooks in /home/xilinx/jupyter_notebooks; Kria-PYNQ runs on Ubuntu for
# Kria (login `ubuntu`) and installs its notebooks under /home/root/jupyter_notebooks, which needs sudo.
_PYNQ_ACCESS = ("xilinx", "/home/xilinx/jupyter_notebooks", False)
BOARD_ACCESS = {
    "Pynq-Z1": _PYNQ_ACCESS, "Pynq-Z2": _PYNQ_ACCESS, "Ultra96-V2": _PYNQ_ACCESS, "ZCU104": _PYNQ_ACCESS,
    "KV260": ("ubuntu", "/home/root/jupyter_notebooks", True),
}


class DeployError(OnebitError):
    """The build folder cannot be packaged (unfinished build, missing driver, unreadable report)."""


def find_bitstream(build_dir: Path) -> tuple[Path | None, Path | None]:
    """The .bit and .hwh FINN wrote for this build, or None for each one that does not exist.

    Only files: a name in a report or in FINN's metadata is not a bitfile.
    """
    for folder in (build_dir / "bitfile", build_dir / "deploy" / "bitfile"):
        bit, hwh = folder / BITFILE, folder / HWH
        if bit.is_file() or hwh.is_file():
            return (bit if bit.is_file() else None), (hwh if hwh.is_file() else None)
    return None, None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_report(build_dir: Path, report: dict[str, Any] | None) -> dict[str, Any]:
    if report is not None:
        return report
    path = build_dir / "report.json"
    if not path.is_file():
        raise DeployError(f"{build_dir}: no report.json, so the build did not finish; rerun `onebit build` "
                          f"with --out {build_dir}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DeployError(f"{path} is unreadable ({error}); rerun `onebit build`") from None


def validation_set(build_dir: Path, samples: int, dataset: str | None = None,
                   data_root: str | None = None) -> dict[str, np.ndarray]:
    """The first `samples` test images with labels and the collapsed PyTorch model's integer outputs.

    The expected outputs are the software side of `onebit validate` (hw.check.validate.software_scores), so the
    board compares against exactly what the build was verified against.
    """
    from hw.check.validate import software_scores
    from hw.check.imported import build_meta
    from quant_models.data import load_dataset

    if samples < 1:
        raise DeployError(f"the validation set needs at least 1 image, got {samples}")
    meta = build_meta(build_dir)  # the checkpoint's, or an imported QONNX model's record
    name = dataset or (meta.get("dataset") or {}).get("name")
    if not name:
        raise DeployError(f"{build_dir}/model.pt names no dataset; pass the dataset name")
    if data_root is None and not dataset:  # where training found it (quant_models.train records it)
        data_root = (meta.get("dataset") or {}).get("root")
    data = load_dataset(name, "test", data_root)
    images = np.ascontiguousarray(data.images[:samples], dtype=np.uint8)
    labels = data.labels[:samples].astype(np.int64)
    scores = software_scores(build_dir, images).astype(np.int64)
    return {"images": images, "labels": labels, "scores": scores,
            "classes": np.argmax(scores, axis=1).astype(np.int64),  # first index on ties, as the driver
            "indices": np.arange(len(labels), dtype=np.int64),
            "dataset": np.array(name), "class_names": np.array(list(data.classes))}


def _copy_driver(build_dir: Path, target: Path, bitfile_rel: str | None) -> None:
    source = build_dir / "driver"
    if not (source / "io.json").is_file():
        raise DeployError(f"{build_dir}: no driver/io.json; the build did not finish, rerun `onebit build`")
    if not (source / "__init__.py").is_file():
        raise DeployError(f"{build_dir}/driver has io.json but not the onebit driver package; rerun `onebit build`")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    spec = json.loads((target / "io.json").read_text())
    # The driver resolves the bitfile relative to io.json (hw/driver/accelerator.py); never name one that
    # is not in the package.
    spec["bitfile"] = bitfile_rel
    (target / "io.json").write_text(json.dumps(spec, indent=2))


def _copy_notebooks(target: Path) -> list[str]:
    notebooks = sorted(NOTEBOOKS_DIR.glob("*.ipynb")) if NOTEBOOKS_DIR.is_dir() else []
    target.mkdir()
    for notebook in notebooks:
        shutil.copy2(notebook, target / notebook.name)
    return [n.name for n in notebooks]


def _skipped_steps(build_dir: Path, report: dict[str, Any]) -> list[dict[str, str]]:
    if isinstance(report.get("skipped_steps"), list):
        return report["skipped_steps"]
    rows = []
    path = build_dir / "skipped.txt"
    for line in path.read_text().splitlines() if path.is_file() else []:
        step, sep, rest = line.partition(": missing ")
        if sep and step.startswith("step_"):
            rows.append({"step": step, "missing": rest})
    return rows


def _docker_command(build_dir: Path, board: str) -> str:
    return ("docker run --rm --init -u \"$(id -u):$(id -g)\" -v /opt/Xilinx:/opt/Xilinx:ro "
            "-e FINN_XILINX_PATH=/opt/Xilinx -e FINN_XILINX_VERSION=2024.2 "
            f"-v \"$PWD:/work:ro\" -v \"$PWD/build:/build\" onebit:latest "
            f"onebit build /work/model.pt --board {shlex.quote(board)} "
            f"--out {shlex.quote('/build/' + build_dir.name)}")


def _missing_text(missing: list[dict[str, str]], skipped: list[dict[str, str]], build_dir: Path, board: str,
                  no_bitstream: bool) -> str:
    lines = ["These files are not in this deployment package; nothing in it (manifest.json, driver/io.json,",
             "README.md) claims them.", "", "Missing files:"]
    lines += [f"  {m['path']}: {m['why']}" for m in missing]
    if no_bitstream:
        lines += ["", "The build ran without the Xilinx tools. FINN steps it skipped (from skipped.txt; never faked):"]
        lines += [f"  {s['step']}: missing {s['missing']}" for s in skipped] or ["  (none recorded)"]
        lines += ["", "How to get them:",
                  "  Run the same build where AMD Vivado + Vitis HLS 2024.2 are installed, e.g. with the onebit Docker",
                  "  image and the host's Vivado mounted (docs/docker.md; docker/entrypoint.sh picks the tools up),",
                  "  from a folder holding this build's model.pt:", "",
                  f"    {_docker_command(build_dir, board)}", "",
                  "  That build writes bitfile/finn-accel.bit + .hwh and a new deploy/ with them. On a machine with",
                  f"  Vivado on PATH and `finn deps update` done: `onebit build model.pt --board {board}`.",
                  "  An existing build folder that has its bitfile/ is re-packaged with `python -m hw.deploy BUILD_DIR`."]
    return "\n".join(lines) + "\n"


def _fmt(value: Any, spec: str, fallback: str = "n/a") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else fallback


def _readme(build_dir: Path, report: dict[str, Any], manifest: dict[str, Any], notebooks: list[str],
            data: dict[str, np.ndarray]) -> str:
    board = manifest["board"]
    estimate = report.get("estimate") or {}
    verification = report.get("verification") or {}
    arch = ((report.get("checkpoint") or {}).get("arch") or {}).get("name", "?")
    n = int(len(data["labels"]))
    set_accuracy = float(np.mean(data["classes"] == data["labels"]))
    has_bitfile = manifest["bitfile"] is not None
    lines = [f"# onebit deployment package: {arch} on {board}", ""]
    if not has_bitfile:
        lines += ["**No bitstream in this package.** The build ran without Vivado, so `bitfile/finn-accel.bit` and "
                  "`bitfile/finn-accel.hwh` do not exist and this package cannot program the board. "
                  "`MISSING.txt` lists the missing files, the skipped FINN steps and the command that produces them "
                  "(the onebit Docker image with Vivado mounted, docs/docker.md). Everything else below is ready.", ""]
    else:
        lines += [f"Bitstream: `{manifest['bitfile']}` with its hardware handoff `{manifest['hwh']}`.", ""]
    lines += ["## Board image", "",
              f"Flash {PYNQ_IMAGES.get(board, 'a PYNQ v3.0 or later image for ' + board)}. Nothing is installed with "
              "pip: the driver needs only numpy and pynq, which the image has.", "",
              "## Copy to the board", ""]
    user, notebooks_dir, root_owned = BOARD_ACCESS.get(board, _PYNQ_ACCESS)
    folder = f"{notebooks_dir}/onebit-{build_dir.name}"  # quoted in the commands: a name with spaces stays one word
    if root_owned:  # Kria-PYNQ: log in as ubuntu, the notebook folder belongs to root
        lines += [f"    scp deploy.zip {user}@<board-ip>:~/   # or copy the deploy/ folder",
                  f"    ssh {user}@<board-ip>",
                  f"    sudo unzip ~/deploy.zip -d {shlex.quote(folder)}"]
    else:
        lines += [f"    scp deploy.zip {user}@<board-ip>:{notebooks_dir}/   # or copy the deploy/ folder",
                  f"    ssh {user}@<board-ip>",
                  f"    cd {notebooks_dir} && unzip deploy.zip -d {shlex.quote('onebit-' + build_dir.name)}"]
    lines += ["", "## Check it on the board", "",
              "PYNQ needs root for the FPGA. In a Jupyter terminal (already root, pynq environment active), or over ssh:",
              "", "    sudo -i", "    source /etc/profile.d/pynq_venv.sh   # PYNQ v3 images and Kria-PYNQ",
              f"    cd {shlex.quote(folder + '/deploy')}",
              "    python3 validate_on_board.py", "",
              f"It programs the bitstream, runs the {n} validation images "
              f"({data['dataset']} test images 0..{n - 1}, `validation/validation_set.npz`) through the accelerator and "
              "compares the integer class scores with those the collapsed PyTorch model gives (stored in the same "
              "file): every sample must match exactly. Exit status 0 = bit-exact, 1 = a mismatch (the first ones "
              "are printed), 2 = it could not run (e.g. no bitstream).", "",
              "From Python (a notebook):", "",
              "    from driver import Accelerator",
              "    acc = Accelerator(\"driver/io.json\", backend=\"board\")",
              "    prediction = acc.predict(images_uint8_nchw)   # .classes, .scores (integer), .raw",
              "    acc.throughput_test()", ""]
    if notebooks:
        lines += ["Notebooks (open them in Jupyter at http://<board-ip>:9090, from this folder's `notebooks/`): "
                  + ", ".join(f"`{n}`" for n in notebooks) + ".", ""]
    else:
        lines += ["Notebooks: none in this onebit checkout (`notebooks/` was empty when the package was made).", ""]
    lines += ["## What to expect", "",
              f"- Classes on the validation set: {set_accuracy:.2%} of the {n} images correct (the software outputs); "
              "the board must give the same integers.",
              f"- Test accuracy of the build: {_fmt(report.get('accuracy'), '.2%')} on "
              f"{verification.get('samples', '?')} {verification.get('dataset', '')} test images (report.json).",
              f"- Estimated throughput: {_fmt(estimate.get('fps'), ',.0f')} images/s at "
              f"{_fmt(estimate.get('clock_mhz'), '.0f')} MHz, latency {_fmt(estimate.get('latency_us'), '.1f')} us "
              "(FINN's cycle estimates of the dataflow layers; the measured rate also includes DMA and the "
              "host-side packing, see `throughput_test()`).", ""]
    packing = report.get("input_packing")
    if packing:
        lines[-1:-1] = [
            f"- Bit-packed input: the driver thresholds each pixel (>= {packing['thresholds']}) and packs 8 to a byte, "
            f"{packing['bytes_per_image']} B per image to the DMA; `acc.execute(images)` packs, "
            "`acc.execute_packed(acc.pack_images(images))` runs preloaded buffers at the accelerator's rate. The "
            f"build machine packed {_fmt(packing.get('host_images_per_s'), ',.0f')} images/s (numpy); the board's "
            "ARM cores are slower, so with unpacked images arriving the host's packing may be the limit."]
    lines += ["## Files", "", "`manifest.json` lists every file with its sha256. `report.md` is the build's report."]
    if manifest["missing"]:
        lines += ["", "Missing: " + ", ".join(f"`{m['path']}`" for m in manifest["missing"]) + " (see MISSING.txt)."]
    return "\n".join(lines) + "\n"


# The board-side check: numpy + the driver package only (the PYNQ image has numpy 1.x, no onebit, no torch).
BOARD_SCRIPT = '''"""Run this package's validation set through the accelerator and compare the integer outputs (onebit).

    python3 validate_on_board.py [--batch-size N]

Exit status: 0 every sample bit-exact, 1 a mismatch, 2 it could not run (a file differs from manifest.json,
no bitstream, not a PYNQ board).
Needs numpy and pynq only (a PYNQ image has both).
"""
import argparse
import json
import sys
import time
from pathlib import Path

# No bytecode written into the package; the check below refuses any in its __pycache__ that is not the
# compiled form of a checked module (a planted .pyc would run instead of its checked .py, issue 23).
sys.dont_write_bytecode = True

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# The package check runs before any driver code is imported (a copy of hw/driver/integrity.py).
%%INTEGRITY%%


try:
    verify_package(HERE)
except PackageIntegrityError as _error:
    print("onebit: %s" % _error, file=sys.stderr)
    raise SystemExit(2)

from driver import Accelerator, DriverError  # noqa: E402


def load_set(folder=HERE):
    with np.load(str(Path(folder) / "validation" / "validation_set.npz"), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def compare(accelerator, data):
    """The accelerator's integer scores against the expected ones, sample by sample."""
    started = time.perf_counter()
    prediction = accelerator.predict(data["images"])
    seconds = time.perf_counter() - started
    scores = np.asarray(prediction.scores, dtype=np.int64)
    if scores.shape != data["scores"].shape:
        raise DriverError("the accelerator gives scores of shape %s, the validation set expects %s; "
                          "the bitstream is not this build's" % (scores.shape, data["scores"].shape))
    mismatched = np.flatnonzero(np.any(scores != data["scores"], axis=1))
    return {"samples": int(len(scores)), "mismatches": int(len(mismatched)),
            "first_mismatches": [int(i) for i in mismatched[:10]],
            "class_mismatches": int(np.sum(prediction.classes != data["classes"])),
            "accuracy": float(np.mean(prediction.classes == data["labels"])),
            "expected_accuracy": float(np.mean(data["classes"] == data["labels"])),
            "images_per_s": float(len(scores) / seconds) if seconds > 0 else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=None, help="images per DMA transfer")
    args = parser.parse_args(argv)
    try:  # every file as the build wrote it (again: the files may have changed since the import)
        manifest = verify_package(HERE)
    except PackageIntegrityError as error:
        print("onebit: %s" % error, file=sys.stderr)
        return 2
    if manifest.get("bitfile") is None:
        print("onebit: this package has no bitstream (the build ran without Vivado); see MISSING.txt", file=sys.stderr)
        return 2
    try:
        accelerator = Accelerator(HERE / "driver" / "io.json", backend="board", batch_size=args.batch_size)
        result = compare(accelerator, load_set())
        result["throughput"] = accelerator.throughput_test()
    except DriverError as error:
        print("onebit: %s" % error, file=sys.stderr)
        return 2
    print("%d images: %d integer mismatches%s; accuracy %.2f%% (software %.2f%%)" % (
        result["samples"], result["mismatches"],
        " (first at %s)" % result["first_mismatches"] if result["mismatches"] else "",
        100 * result["accuracy"], 100 * result["expected_accuracy"]))
    print("throughput: %.0f images/s (transfer only), %.0f images/s with packing" % (
        result["throughput"]["throughput[images/s]"], result["throughput"]["total_throughput[images/s]"]))
    return 1 if result["mismatches"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
'''


def board_script() -> str:
    """validate_on_board.py: BOARD_SCRIPT with the package check (hw/driver/integrity.py) inlined."""
    source = (Path(__file__).resolve().parent / "driver" / "integrity.py").read_text()
    body = source[source.index("# Unlisted files"):]  # its imports (hashlib, json, os) are added below
    return BOARD_SCRIPT.replace("%%INTEGRITY%%", "import hashlib  # noqa: E402\nimport os  # noqa: E402\n\n" + body)


def _file_entries(root: Path) -> list[dict[str, Any]]:
    return [{"path": p.relative_to(root).as_posix(), "bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"]


def _write_zip(folder: Path, target: Path) -> None:
    def fill(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, Path("deploy") / path.relative_to(folder))

    write_atomic(target, fill)


def _record_in_report(build_dir: Path, entry: dict[str, Any]) -> None:
    """Add the package to report.json (atomically), so the report says where it is and that bitfile is null."""
    path = build_dir / "report.json"
    if not path.is_file():
        return
    report = json.loads(path.read_text())
    report["deploy"] = entry
    report.setdefault("artifacts", {}).update({"deploy": entry["dir"], "deploy_zip": entry["zip"]})
    write_text_atomic(path, json.dumps(report, indent=2, default=str))


def remove_deployment_package(build_dir: str | Path) -> None:
    """Remove deploy/ and deploy.zip (a stale package must not outlive a rebuild); keeps FINN's bitstream."""
    build_dir = Path(build_dir)
    for old in (build_dir / "deploy", build_dir / "deploy.zip"):
        if old.is_dir() and not old.is_symlink():
            # FINN's own deploy/bitfile is a copy of bitfile/; keep the bitstream if only it holds one.
            if (old / "bitfile").is_dir() and not (build_dir / "bitfile").exists():
                os.replace(old / "bitfile", build_dir / "bitfile")
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()


def make_deployment_package(build_dir: str | Path, samples: int = DEFAULT_SAMPLES, report: dict[str, Any] | None = None,
                            data_root: str | None = None, progress: bool = True) -> Path:
    """Write `build_dir/deploy/` and `build_dir/deploy.zip` for a finished build; returns the deploy folder."""
    build_dir = Path(build_dir).resolve()
    if not build_dir.is_dir():
        raise DeployError(f"{build_dir}: no such build folder; run `onebit build model.pt --out {build_dir}` first")
    final, zip_path = build_dir / "deploy", build_dir / "deploy.zip"
    # The old package (if any) stays until the new one is complete: a failure below keeps it. `onebit build`
    # removes the previous build's package before it starts (it describes another build).
    given_report = report
    report = _read_report(build_dir, report)
    board = (report.get("board") or {}).get("name")
    if not board:
        raise DeployError(f"{build_dir}/report.json names no board; rerun `onebit build`")
    bit, hwh = find_bitstream(build_dir)
    stale_note = None
    if (bit or hwh) and "step_synthesize_bitfile" not in ((report.get("steps") or {}).get("run") or []):
        # FINN never deletes bitfile/: one left from an earlier Vivado build of this folder is not this build's.
        stale_note = (f"{(bit or hwh).parent.relative_to(build_dir)}/ holds a bitstream, but this build did not run "
                      "step_synthesize_bitfile: it is from an earlier build of this folder and is not packaged")
        bit = hwh = None
    # Temporaries carry the pid: the next run removes those of a killed one (onebit/buildfolder.py).
    tmp, zip_tmp_target = build_dir / f".deploy.tmp-{os.getpid()}", build_dir / f".deploy.zip.tmp-{os.getpid()}"
    old = build_dir / f".deploy.old-{os.getpid()}"
    for name in (tmp, zip_tmp_target, old):  # only a recorded temporary is ever removed (issue 23)
        if name.exists() or name.is_symlink():
            raise DeployError(f"{name} is in the way and onebit did not record it; move it away and rerun")
        temporaries.note(name)
    stages = ["bitstream", "driver", "notebooks", "validation set", "readme", "manifest", "zip"]
    bar = None
    if progress:
        from onebit.progress import bar as progress_bar

        bar = progress_bar(total=len(stages), desc="deployment package", unit="part", leave=True)
    try:
        tmp.mkdir(parents=True)
        missing: list[dict[str, str]] = []
        bitfile_rel = hwh_rel = None
        if bit is not None or hwh is not None:
            (tmp / "bitfile").mkdir()
        if bit is not None:
            shutil.copy2(bit, tmp / "bitfile" / BITFILE)
            bitfile_rel = f"bitfile/{BITFILE}"
        else:
            missing.append({"path": f"bitfile/{BITFILE}", "why": "the bitstream; FINN step_synthesize_bitfile "
                            "(Vivado) did not run, see skipped steps"})
        if hwh is not None:
            shutil.copy2(hwh, tmp / "bitfile" / HWH)
            hwh_rel = f"bitfile/{HWH}"
        else:
            missing.append({"path": f"bitfile/{HWH}", "why": "the hardware handoff PYNQ reads with the bitstream; "
                            "written by FINN step_synthesize_bitfile (Vivado)"})
        _tick(bar)
        _copy_driver(build_dir, tmp / "driver", f"../{bitfile_rel}" if bitfile_rel else None)
        _tick(bar)
        notebooks = _copy_notebooks(tmp / "notebooks")
        if not notebooks:
            missing.append({"path": "notebooks/*.ipynb", "why": "this onebit checkout has no notebooks/*.ipynb"})
        _tick(bar)
        data = validation_set(build_dir, samples, data_root=data_root)
        faults.point("deploy:after_validation_set")
        (tmp / "validation").mkdir()
        np.savez_compressed(tmp / "validation" / "validation_set.npz", **data)
        (tmp / "validate_on_board.py").write_text(board_script())
        _tick(bar)
        if (build_dir / "report.md").is_file():
            shutil.copy2(build_dir / "report.md", tmp / "report.md")
        if given_report is not None:  # `onebit build` writes report.json after the package (it marks the end)
            (tmp / "report.json").write_text(json.dumps(given_report, indent=2, default=str))
        elif (build_dir / "report.json").is_file():
            shutil.copy2(build_dir / "report.json", tmp / "report.json")
        skipped = _skipped_steps(build_dir, report)
        manifest: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "build": build_dir.name, "board": board,
            "bitfile": bitfile_rel, "hwh": hwh_rel, "missing": missing, "skipped_steps": skipped,
            "validation_set": {"path": "validation/validation_set.npz", "samples": int(len(data["labels"])),
                               "dataset": str(data["dataset"]), "test_indices": f"0..{len(data['labels']) - 1}",
                               "expected": "integer class scores and argmax of the collapsed PyTorch model"},
            "expected": {"accuracy": report.get("accuracy"), "fps": (report.get("estimate") or {}).get("fps"),
                         "clock_mhz": (report.get("estimate") or {}).get("clock_mhz")},
        }
        if stale_note:
            missing.append({"path": "bitfile/ (stale)", "why": stale_note})
        if missing:
            (tmp / "MISSING.txt").write_text(_missing_text(missing, skipped, build_dir, board,
                                                           no_bitstream=bitfile_rel is None or hwh_rel is None))
        (tmp / "README.md").write_text(_readme(build_dir, report, manifest, notebooks, data))
        _tick(bar)
        manifest["files"] = _file_entries(tmp)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))  # last: it marks a complete package
        _tick(bar)
        _write_zip(tmp, zip_tmp_target)
        faults.point("deploy:before_swap")
        if final.exists() or final.is_symlink():  # the old package goes only now that the new one is complete
            os.replace(final, old)
        os.replace(tmp, final)
        os.replace(zip_tmp_target, zip_path)
        _tick(bar)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        zip_tmp_target.unlink(missing_ok=True)
        if old.exists() and not final.exists():
            os.replace(old, final)  # interrupted between the renames: put the old package back
        for name in (tmp, zip_tmp_target, old):
            if not name.exists():
                temporaries.forget(name)
        raise
    finally:
        if bar is not None:
            bar.close()
    if old.exists():
        if (old / "bitfile").is_dir() and not (build_dir / "bitfile").exists():
            os.replace(old / "bitfile", build_dir / "bitfile")  # FINN's copy of a bitstream: keep it
        shutil.rmtree(old, ignore_errors=True)
    for name in (tmp, zip_tmp_target, old):
        temporaries.forget(name)
    entry = {"dir": str(final), "zip": str(zip_path), "bitfile": bitfile_rel, "hwh": hwh_rel,
             "missing": [m["path"] for m in missing], "manifest": str(final / "manifest.json"),
             "manifest_sha256": _sha256(final / "manifest.json")}
    if given_report is not None:  # the caller writes report.json (last), with the package in it
        given_report["deploy"] = entry
        given_report.setdefault("artifacts", {}).update({"deploy": entry["dir"], "deploy_zip": entry["zip"]})
    _record_in_report(build_dir, entry)
    return final


def _tick(bar) -> None:
    if bar is not None:
        bar.update(1)


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=program_name("python -m hw.deploy"),
                                     description="(Re)make the deployment package deploy/ + deploy.zip of a finished build")
    parser.add_argument("build_dir", type=Path, help="a build folder written by `onebit build`")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                        help=f"test images in the validation set (default {DEFAULT_SAMPLES})")
    parser.add_argument("--data-root", help="dataset folder (default: as quant_models.data resolves it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    from onebit.buildfolder import BuildFolder

    with BuildFolder(args.build_dir, "python -m hw.deploy", create=False, option="BUILD_DIR") as build_folder:
        # locked, writable, and the package it replaces holds nothing onebit did not write
        build_folder.claim(["deploy", "deploy.zip"], replace=["deploy", "deploy.zip"])
        from hw.check.finished import check_build_files, finished_report

        # a package of a changed build (another model.pt) would disagree with the build's accelerator
        check_build_files(args.build_dir, finished_report(args.build_dir))
        import quant_models.compat  # noqa: F401  (Brevitas on torch 2.13, for the expected outputs)

        folder = make_deployment_package(args.build_dir, args.samples, data_root=args.data_root,
                                         progress=not args.no_progress)
        build_folder.record(["deploy", "deploy.zip"])
    manifest = json.loads((folder / "manifest.json").read_text())
    print(f"deployment package: {folder} and {folder.parent / 'deploy.zip'} ({len(manifest['files'])} files, "
          f"bitfile: {manifest['bitfile'] or 'none, see MISSING.txt'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
