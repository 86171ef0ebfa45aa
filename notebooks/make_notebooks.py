"""Writes the board notebooks 1_classify.ipynb, 2_validate.ipynb, 3_throughput.ipynb (no outputs).

    python notebooks/make_notebooks.py          # rewrite them after editing this file
    python notebooks/make_notebooks.py --check  # exit 1 if a committed notebook differs from this source

Why a generator: the three notebooks share their parameter and setup cells, which must stay identical (the
same folder resolution, backend choice and reference data on every notebook), and a Python source diffs and
reviews better than notebook JSON. tests/test_notebooks.py checks the committed files match this source.

The notebooks run in two places with the same cells:
  * on a PYNQ board, from a deployment package (`deploy/notebooks/`, hw/deploy.py): backend "board", the
    bitfile, the driver, and the package's validation set (validation/validation_set.npz: images, labels and
    the collapsed PyTorch model's integer scores) as the software reference. numpy, matplotlib and pynq
    only: a PYNQ image has no torch.
  * anywhere else (CI, a laptop): backend "model", the bit-exact accelerator model of the build
    (hw/check/accel_model.py, needs the build folder's FINN model). Without a validation set, the software
    reference comes from the checkpoint (quant_models + export.collapse), off-board only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PARAMETERS = '''\
# Parameters (tagged "parameters"; every one can also come from an environment variable, as CI does).
import os

# A deployment package (deploy/, this notebook's parent folder on the board) or a build folder.
BUILD_DIR = os.environ.get("ONEBIT_BUILD_DIR", "..")
# "board" (PYNQ + bitfile), "model" (bit-exact accelerator model, off-board) or "auto" (board where one is).
BACKEND = os.environ.get("ONEBIT_BACKEND", "auto")
# Test images to use (the validation set may hold fewer; all of them are used then).
N = int(os.environ.get("ONEBIT_N", "{n}"))
# Images per DMA transfer; 0 = the build's default (io.json).
BATCH_SIZE = int(os.environ.get("ONEBIT_BATCH_SIZE", "0"))
'''

SETUP = '''\
# Setup: find the driver, choose the backend, open the accelerator.
import sys
import time
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt

build = Path(BUILD_DIR).expanduser().resolve()
if not (build / "driver" / "io.json").is_file():
    # The kernel runs in the notebook's folder: a relative path is resolved from there, not from the shell's.
    relative = "" if Path(BUILD_DIR).expanduser().is_absolute() else (
        f" (the relative path {BUILD_DIR!r} was resolved from the notebook's folder {Path.cwd()}; give an "
        "absolute one, e.g. ONEBIT_BUILD_DIR=$PWD/build/tfc)")
    raise FileNotFoundError(f"{build} holds no driver/io.json{relative}; set ONEBIT_BUILD_DIR (or BUILD_DIR above) "
                            "to a build folder or its deploy/ folder")
# A build folder that has its deployment package uses the package (bitfile path, validation set).
package = build / "deploy" if (build / "deploy" / "manifest.json").is_file() else build
# The FINN build folder (the model backend needs its FINN model): a package's parent, when it is one.
finn_build = build.parent if (build / "manifest.json").is_file() else build

sys.path.insert(0, str(package))  # the package's own driver: the one that matches its io.json and bitfile
from driver import Accelerator, IOSpec  # noqa: E402

spec = IOSpec.load(package / "driver" / "io.json")


def on_pynq_board() -> bool:
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pynq warns about its own dependencies off-board
            import pynq
            return len(pynq.Device.devices) > 0
    except Exception:  # no pynq, or pynq finds no FPGA (x86)
        return False


backend = BACKEND if BACKEND != "auto" else ("board" if on_pynq_board() else "model")
accel_model = None
if backend == "model":
    # Off-board only: the accelerator model reads the build's final FINN model (qonnx), which a board lacks.
    if os.environ.get("ONEBIT_REPO"):
        sys.path.insert(0, os.environ["ONEBIT_REPO"])
    try:
        from hw.check.accel_model import AcceleratorModel
    except ImportError as error:
        raise ImportError(f"backend 'model' needs the onebit checkout ({error}); set ONEBIT_REPO to it, or run "
                          "on the board with backend 'board'") from None
    if not (finn_build / "finn").is_dir():
        raise FileNotFoundError(f"{finn_build} has no finn/ models; backend 'model' needs the build folder, "
                                "not a copied deployment package (set ONEBIT_BUILD_DIR to the build)")
    accel_model = AcceleratorModel.from_build(finn_build)

accelerator = Accelerator(spec, backend=backend, model=accel_model, batch_size=BATCH_SIZE or None)
print(f"build: {finn_build.name}   package: {package}")
print(f"backend: {backend} ({'PYNQ board, bitfile' if backend == 'board' else 'bit-exact accelerator model, no board'})")
print(f"input {spec.idt} {list(spec.image_shape)} -> output {spec.odt} x {spec.num_classes} classes, "
      f"batch size {accelerator.batch_size}")
'''

# Test images with labels and, when wanted, the software reference (integer class scores).
LOAD_DATA = '''\
# Test images, labels and the software reference (integer class scores of the collapsed PyTorch model).
validation_set = package / "validation" / "validation_set.npz"
data = None
if validation_set.is_file():
    with np.load(validation_set, allow_pickle=False) as stored:
        data = {key: stored[key] for key in stored.files}
    if len(data["labels"]) < N and backend != "board" and (finn_build / "model.pt").is_file():
        # Off-board with the build's checkpoint, N is honoured: the test set and PyTorch give the reference.
        print(f"the package's validation set holds {len(data['labels'])} images, N = {N}: "
              "using the test set and the checkpoint instead")
        data = None
    elif len(data["labels"]) < N:
        print(f"the package's validation set holds {len(data['labels'])} images, N = {N}: using all "
              f"{len(data['labels'])} (a larger one: python -m hw.deploy BUILD --samples {N})")
if data is not None:
    images, labels, expected = data["images"][:N], data["labels"][:N], data["scores"][:N]
    # class_names is optional in the package (design.md 5 lists images, labels, scores, classes)
    class_names = ([str(name) for name in data["class_names"]] if "class_names" in data
                   else [str(k) for k in range(spec.num_classes)])
    reference = f"validation set of the package ({len(images)} of {len(data['labels'])} images)"
elif backend == "board":
    raise FileNotFoundError(f"{validation_set} is missing; the board has no PyTorch to make the reference, "
                            "copy the whole deploy/ folder (hw/deploy.py writes it)")
else:
    if not (finn_build / "model.pt").is_file():
        raise FileNotFoundError(f"{validation_set} is missing and {finn_build} has no model.pt to compute the "
                                "reference from; set ONEBIT_BUILD_DIR to the build folder")
    # Off-board only (the board has no torch): the test set and the checkpoint, as `onebit validate` does.
    from quant_models.checkpoint import read_checkpoint
    from quant_models.data import load_dataset
    meta = read_checkpoint(finn_build / "model.pt")
    test_set = load_dataset(meta["dataset"]["name"], "test")
    images, labels = test_set.images[:N], test_set.labels[:N]
    class_names = list(test_set.classes)
    expected = None
    if NEED_REFERENCE:
        import quant_models.compat  # noqa: F401  (Brevitas on torch 2.13)
        from hw.check.validate import software_scores
        expected = software_scores(finn_build, images)
    reference = f"the checkpoint in PyTorch on {len(images)} test images"
print(f"{len(images)} images, reference: {reference}")
'''

CLASSIFY_PLOT = '''\
# Classify a few images and show them with the predicted and the true label.
shown = images[:min(len(images), 12)]
started = time.perf_counter()
prediction = accelerator.predict(shown)
seconds = time.perf_counter() - started
print(f"{len(shown)} images in {seconds * 1e3:.1f} ms ({backend} backend)")

columns = 6
rows = (len(shown) + columns - 1) // columns
fig, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.6 * rows), squeeze=False)
for ax in axes.flat:
    ax.axis("off")
for i, ax in enumerate(axes.flat[:len(shown)]):
    picture = shown[i].transpose(1, 2, 0)  # C, H, W -> H, W, C
    ax.imshow(picture[:, :, 0] if picture.shape[2] == 1 else picture, cmap="gray")
    right = prediction.classes[i] == labels[i]
    ax.set_title(f"{class_names[prediction.classes[i]]}\\n(true: {class_names[labels[i]]})", fontsize=8,
                 color="green" if right else "red")
fig.suptitle(f"accelerator ({backend}): predicted (true)")
fig.tight_layout()
plt.show()
'''

CLASSIFY_SCORES = '''\
# The raw integer class scores behind the first prediction (what the output DMA carries, after the score affine).
for name, score in zip(class_names, prediction.scores[0]):
    print(f"{name:>12}: {int(score):5d}{'   <- predicted' if name == class_names[prediction.classes[0]] else ''}")
'''

VALIDATE_RUN = '''\
# The whole set through the accelerator, then integers compared with the software reference, sample by sample.
started = time.perf_counter()
chunks = []
for start in range(0, len(images), accelerator.batch_size):
    chunks.append(accelerator.predict(images[start:start + accelerator.batch_size]).scores)
accelerator_seconds = time.perf_counter() - started
scores = np.concatenate(chunks).astype(np.int64)
expected = np.asarray(expected, dtype=np.int64)
assert scores.shape == expected.shape, f"accelerator scores {scores.shape} vs reference {expected.shape}"

mismatched = np.flatnonzero(np.any(scores != expected, axis=1))
predicted, expected_classes = scores.argmax(axis=1), expected.argmax(axis=1)
accelerator_accuracy = float(np.mean(predicted == labels))
software_accuracy = float(np.mean(expected_classes == labels))
print(f"samples:                     {len(images)}")
print(f"software accuracy:           {software_accuracy:.2%}  ({reference})")
print(f"accelerator accuracy:        {accelerator_accuracy:.2%}  ({backend} backend, "
      f"{len(images) / accelerator_seconds:,.0f} images/s)")
print(f"integer score mismatches:    {len(mismatched)}" + (f"  (first at {mismatched[:10].tolist()})" if len(mismatched) else ""))
print(f"class disagreements:         {int(np.sum(predicted != expected_classes))}")
'''

VALIDATE_PLOT = '''\
# Confusion matrix of the accelerator's classes against the true labels.
k = len(class_names)
confusion = np.zeros((k, k), dtype=np.int64)
np.add.at(confusion, (labels, predicted), 1)
fig, ax = plt.subplots(figsize=(7, 6))
image = ax.imshow(confusion, cmap="Blues")
ax.set_xticks(range(k))
ax.set_xticklabels(class_names, rotation=60, ha="right", fontsize=8)
ax.set_yticks(range(k))
ax.set_yticklabels(class_names, fontsize=8)
ax.set_xlabel("predicted (accelerator)")
ax.set_ylabel("true")
for (i, j), value in np.ndenumerate(confusion):
    ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
            color="white" if value > confusion.max() / 2 else "black")
ax.set_title(f"{backend} backend, {len(images)} images: accuracy {accelerator_accuracy:.2%}, "
             f"{len(mismatched)} mismatches vs software", fontsize=10)
fig.colorbar(image)
fig.tight_layout()
plt.show()
'''

VALIDATE_VERDICT = '''\
# The verdict: a single differing integer fails this cell (and CI, which runs this notebook).
if len(mismatched):
    raise AssertionError(f"{len(mismatched)} of {len(images)} samples differ from the software reference "
                         f"(first at {mismatched[:10].tolist()}): the accelerator is not bit-exact")
print(f"bit-exact: all {len(images)} samples give the software's integer scores")
'''

THROUGHPUT_RUN = '''\
# Throughput and latency against batch size: finn-examples' throughput_test at each batch size.
import json

batch_sizes = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if b <= max(N, 1)]
repeats = 7  # runs per batch size; the median one is kept, so a run the OS interrupts does not count
results = []
for batch_size in batch_sizes:
    accelerator.batch_size = batch_size
    accelerator.throughput_test(1)  # warm-up (buffer allocation, caches)
    runs = sorted((accelerator.throughput_test(1) for _ in range(repeats)), key=lambda r: r["runtime[ms]"])
    results.append(runs[len(runs) // 2])
accelerator.batch_size = BATCH_SIZE or spec.batch_size

print(f"{'batch':>6} {'transfer [images/s]':>20} {'with packing [images/s]':>24} {'latency [ms]':>13}")
for r in results:
    print(f"{r['batch_size']:6d} {r['throughput[images/s]']:20,.0f} {r['total_throughput[images/s]']:24,.0f} "
          f"{r['runtime[ms]']:13.3f}")
'''

THROUGHPUT_PLOT = '''\
# Plotted; the FINN estimate (report.json, cycles of the slowest layer at the build clock) for comparison.
estimated_fps = None
for report_path in (package / "report.json", finn_build / "report.json"):
    if report_path.is_file():
        estimated_fps = (json.loads(report_path.read_text()).get("estimate") or {}).get("fps")
        break

sizes = [r["batch_size"] for r in results]
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
left.plot(sizes, [r["throughput[images/s]"] for r in results], "o-", label="transfer only")
left.plot(sizes, [r["total_throughput[images/s]"] for r in results], "s--", label="with packing/unpacking")
if estimated_fps and backend == "board":
    left.axhline(estimated_fps, color="gray", linestyle=":", label=f"FINN estimate {estimated_fps:,.0f}/s")
left.set_xscale("log", base=2)
left.set_yscale("log")
left.set_xlabel("batch size (images per DMA transfer)")
left.set_ylabel("images/s")
left.set_title("throughput")
left.legend()
right.plot(sizes, [r["runtime[ms]"] for r in results], "o-")
right.set_xscale("log", base=2)
right.set_yscale("log")
right.set_xlabel("batch size (images per DMA transfer)")
right.set_ylabel("latency of one transfer [ms]")
right.set_title("latency")
where = "PYNQ board" if backend == "board" else "accelerator model on this CPU (not board timings)"
fig.suptitle(f"{finn_build.name}: {where}")
fig.tight_layout()
plt.show()
if backend != "board":
    print("These are timings of the bit-exact model in numpy, not of the FPGA; run on the board for those"
          + (f" (FINN estimates {estimated_fps:,.0f} images/s)." if estimated_fps else "."))
'''


def _intro(title: str, what: str) -> str:
    return (f"# {title}\n\n{what}\n\n"
            "On a PYNQ board, open this notebook from the deployment package (`deploy/notebooks/`): it uses the "
            "bitfile through pynq (`backend=\"board\"`). Elsewhere the same cells run on the bit-exact "
            "accelerator model of the build (`backend=\"model\"`). Set the build and the backend in the "
            "parameter cell, or with the environment variables `ONEBIT_BUILD_DIR`, `ONEBIT_BACKEND`, "
            "`ONEBIT_N`, `ONEBIT_BATCH_SIZE`.")


def _notebook(cells: list) -> nbformat.NotebookNode:
    notebook = new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    # Stable ids: regenerating an unchanged notebook gives identical bytes (the --check and the test rely on it).
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index}"
    return notebook


def _parameters(n: int):
    return new_code_cell(PARAMETERS.format(n=n), metadata={"tags": ["parameters"]})


def notebooks() -> dict[str, nbformat.NotebookNode]:
    """The three notebooks by file name."""
    return {
        "1_classify.ipynb": _notebook([
            new_markdown_cell(_intro("1. Classify test images on the accelerator",
                                     "Loads the accelerator (overlay + driver, configured by `driver/io.json`) "
                                     "and classifies a few test images, shown with the predicted and the true "
                                     "label.")),
            _parameters(12),
            new_code_cell(SETUP),
            new_code_cell("NEED_REFERENCE = False  # only images and labels here\n" + LOAD_DATA),
            new_code_cell(CLASSIFY_PLOT),
            new_code_cell(CLASSIFY_SCORES),
        ]),
        "2_validate.ipynb": _notebook([
            new_markdown_cell(_intro("2. Validate the accelerator against software inference",
                                     "Runs the test images through the accelerator and compares its integer "
                                     "class scores with the software's on every sample: both accuracies, the "
                                     "number of mismatching samples (the last cell fails on any), and the "
                                     "confusion matrix.")),
            _parameters(10000),
            new_code_cell(SETUP),
            new_code_cell("NEED_REFERENCE = True\n" + LOAD_DATA),
            new_code_cell(VALIDATE_RUN),
            new_code_cell(VALIDATE_PLOT),
            new_code_cell(VALIDATE_VERDICT),
        ]),
        "3_throughput.ipynb": _notebook([
            new_markdown_cell(_intro("3. Throughput and latency against batch size",
                                     "Measures images/s and the latency of one DMA transfer for batch sizes "
                                     "1, 2, 4, ... up to `N`, and plots them. On the board this is the FPGA "
                                     "with DMA; on the model backend it is the numpy model.")),
            _parameters(1024),
            new_code_cell(SETUP),
            new_code_cell(THROUGHPUT_RUN),
            new_code_cell(THROUGHPUT_PLOT),
        ]),
    }


def render(notebook: nbformat.NotebookNode) -> str:
    return nbformat.writes(notebook) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed notebooks, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name, notebook in notebooks().items():
        nbformat.validate(notebook)
        path = HERE / name
        text = render(notebook)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
            continue
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python notebooks/make_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
