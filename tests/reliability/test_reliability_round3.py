"""Issue 23: a third round of attacks (nothing of the user's deleted, no code run from a model file, no input
that exhausts the machine, no silent corruption, one line instead of a traceback).

Each test replays one attack; its docstring's first line says which (bench/reliability.py turns them into
bench/results/reliability.md). Unit-level replays where they show the same as a full command; commands run
in a fresh process (exit code and stderr as a user sees them) on the session's one TFC build.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onebit.buildfolder import LOCK, BuildFolder
from reliability_helpers import REPO, cli, one_line_error


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) -> sha256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _user_lookalikes(folder: Path) -> list[Path]:
    """The user's files whose names look like onebit's temporaries (issue 23 item 1's reproduction)."""
    dead = _dead_pid()
    files = {folder / ".photos.tmp-4242" / "a.jpg": b"x\n",
             folder / "notes" / ".thesis.tex.old-20240101": b"\\documentclass{article}\n",
             folder / "mynotes" / ".experiment-log.txt.old-20241231": b"run 7: 91.2 %\n",
             folder / f".deploy.tmp-{dead}" / "mine.txt": b"mine\n",
             folder / f".model.pt.{dead}.abcdefgh.tmp.pt": b"an old checkpoint of mine\n",
             folder / f".onebit-probe-{dead}": b"probe?\n",
             folder / ".cache.old-99999999999": b"huge pid\n"}
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return list(files)


# -- 1. data loss: only recorded temporaries are removed ---------------------------------------------------

def test_cleanup_keeps_user_files_that_look_like_temporaries(tmp_path):
    """Issue 23 item 1: opening a folder holding `.photos.tmp-4242/`, `.thesis.tex.old-…`, `.cache.old-99999999999`: all kept byte for byte."""
    folder = tmp_path / "d"
    _user_lookalikes(folder)
    before = _tree(folder)
    with BuildFolder(folder, "test") as held:
        assert held.clean_stale_temporaries() == []
    assert _tree(folder) == before


def test_build_refused_for_report_md_keeps_the_lookalike_folders(tfc_build, tmp_path):
    """Issue 23 item 1: `onebit build --out d` with d/report.md and d/.photos.tmp-4242/a.jpg: exit 2, every user file kept byte for byte."""
    out = tmp_path / "d"
    _user_lookalikes(out)
    (out / "report.md").write_text("my report\n")
    before = _tree(out)
    line = one_line_error(cli("hw.pipeline", tfc_build / "model.pt", "--out", out, "--no-progress"))
    assert "report.md" in line
    assert _tree(out) == before


def test_validate_keeps_user_notes_inside_the_build(finished):
    """Issue 23 item 1: `onebit validate BUILD` with BUILD/mynotes/.experiment-log.txt.old-20241231: exit 0, the notes kept byte for byte."""
    user = _user_lookalikes(finished)
    before = {p: p.read_bytes() for p in user}
    done = cli("hw.check.validate", finished, "--limit", "10", "--backend", "model", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p: p.read_bytes() for p in user} == before


def test_train_keeps_a_lookalike_checkpoint_temporary(tmp_path):
    """Issue 23 item 1 (sibling): `train --out d/model.pt` beside the user's `.model.pt.<pid>.abcdefgh.tmp.pt`: kept."""
    from quant_models.train import _check_writable

    user = _user_lookalikes(tmp_path)
    before = {p: p.read_bytes() for p in user}
    _check_writable(tmp_path / "model.pt")
    assert {p: p.read_bytes() for p in user} == before
    assert not (tmp_path / ".onebit-temporaries").exists()  # no journal left in the user's folder


def test_recorded_temporary_of_a_killed_writer_is_removed(tmp_path):
    """Issue 23 item 1: what onebit recorded still goes: a write SIGKILLed mid-way leaves a temporary the next open removes."""
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "mine.txt").write_text("mine\n")
    script = ("import sys; from onebit.buildfolder import BuildFolder; from onebit.atomic import write_text_atomic\n"
              "with BuildFolder(sys.argv[1], 'test') as f:\n    write_text_atomic(f.path / 'sub' / 'r.json', '{}')\n")
    (folder / "sub").mkdir()
    killed = subprocess.run([sys.executable, "-c", script, str(folder)], cwd=REPO, capture_output=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO), ONEBIT_FAULT="atomic:r.json:SIGKILL"))
    assert killed.returncode == -9, killed.stderr
    left = [p for p in (folder / "sub").iterdir() if p.name.startswith(".r.json.")]
    assert len(left) == 1
    with BuildFolder(folder, "test") as held:
        pass
    assert not left[0].exists() and (folder / "mine.txt").read_text() == "mine\n"
    assert not (folder / ".onebit-temporaries").exists() and not (folder / LOCK).exists()


def test_edited_journal_cannot_point_at_user_files(tmp_path):
    """Issue 23 item 1 (sibling): a journal edited to name report.md, `../x` or a reused pid's live temporary: only the dead writer's temporary goes."""
    from onebit.temporaries import JOURNAL, clean, start_time

    dead, alive = _dead_pid(), os.getpid()
    (tmp_path / "b").mkdir()
    (tmp_path / "x").write_text("outside\n")
    (tmp_path / "b" / "report.md").write_text("mine\n")
    reused = tmp_path / "b" / f".deploy.tmp-{alive}"  # our pid, but recorded by an earlier process (container)
    reused.mkdir()
    live = tmp_path / "b" / f".report.json.{alive}.abcdefgh.tmp.json"
    live.write_text("{}")
    entries = [{"pid": dead, "start": None, "path": "report.md"}, {"pid": dead, "start": None, "path": "../x"},
               {"pid": alive, "start": "1", "path": reused.name},
               {"pid": alive, "start": start_time(alive), "path": live.name}]
    (tmp_path / "b" / JOURNAL).write_text("".join(json.dumps(e) + "\n" for e in entries) + "garbage\n")
    assert clean(tmp_path / "b") == [reused]
    assert (tmp_path / "b" / "report.md").read_text() == "mine\n" and (tmp_path / "x").read_text() == "outside\n"
    assert live.exists()


def test_lock_with_an_impossible_pid_is_stale_not_a_traceback(finished):
    """Issue 23 item 11: a lock (or temporary) with pid 99999999999: taken over, no OverflowError."""
    (finished / LOCK).write_text(json.dumps({"pid": 99999999999, "command": "onebit build"}))
    done = cli("hw.check.validate", finished, "--limit", "5", "--backend", "model", "--no-progress")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not (finished / LOCK).exists()


# -- 2. no code run from a model file --------------------------------------------------------------------

EVIL = "import pathlib\npathlib.Path(__file__).with_name('RAN.txt').write_text('the module ran')\n"


def _evil_onnx(path: Path, where: str = "graph") -> None:
    """A one-node model whose node is in domain `onebit_evil_ops` (main graph, If branch or function)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])
    evil = helper.make_node("Pwn", ["x"], ["y"], name="evil_0", domain="onebit_evil_ops")
    if where == "if":
        branch = helper.make_graph([evil], "branch", [], [y])
        cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
        node = helper.make_node("If", ["c"], ["y"], name="if_0", then_branch=branch, else_branch=branch)
        graph = helper.make_graph([node], "g", [cond, x], [y])
    else:
        graph = helper.make_graph([evil], "g", [x], [y])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    path.with_name("onebit_evil_ops.py").write_text(EVIL)


def test_model_onnx_with_a_foreign_domain_never_imports_it(tmp_path):
    """Issue 23 item 2: `python -m onebit build model.onnx` beside onebit_evil_ops.py (its node's domain): refused naming the node, the module never ran."""
    _evil_onnx(tmp_path / "model.onnx")
    env = {k: v for k, v in os.environ.items() if k != "ONEBIT_FAULT"}
    done = subprocess.run([sys.executable, "-m", "onebit", "build", "model.onnx", "--input-scale", "1",
                           "--input-shape", "1,28,28", "--dataset", "fashion-mnist", "--out", "b", "--no-progress"],
                          cwd=tmp_path, env=dict(env, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    line = one_line_error(done)
    assert "evil_0" in line and "onebit_evil_ops" in line
    assert not (tmp_path / "RAN.txt").exists() and not (tmp_path / "__pycache__").exists()


@pytest.mark.parametrize("where", ["graph", "if"])
def test_domain_check_reads_subgraphs_without_importing(tmp_path, where):
    """Issue 23 item 2 (sibling): a foreign domain in the main graph or an If branch: refused by the protobuf-only check, nothing imported."""
    from export.onnx_domains import UnsupportedDomain, check_domains
    from export.qonnx_import import load_clean

    _evil_onnx(tmp_path / "model.onnx", where)
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(UnsupportedDomain, match="evil_0"):
            check_domains(tmp_path / "model.onnx")
        with pytest.raises(UnsupportedDomain, match="onebit_evil_ops"):
            load_clean(tmp_path / "model.onnx")  # the import front door checks first
    finally:
        sys.path.remove(str(tmp_path))
    assert "onebit_evil_ops" not in sys.modules and not (tmp_path / "RAN.txt").exists()


def _rerecord(build: Path) -> None:
    """What a hostile build folder looks like: its integrity record made to match its (changed) files."""
    from hw.check.finished import build_integrity

    report = json.loads((build / "report.json").read_text())
    report["integrity"] = build_integrity(build)
    (build / "report.json").write_text(json.dumps(report, indent=2))


def test_validate_of_a_build_with_a_foreign_domain_never_imports_it(finished):
    """Issue 23 item 2 (sibling): `onebit validate .` in a build folder whose finn/*.onnx names a domain module lying beside it: refused, never run."""
    import onnx

    graphs = sorted((finished / "finn").glob("*.onnx"))
    model = onnx.load(str(graphs[-1]))
    model.graph.node[0].domain = "onebit_evil_ops"
    onnx.save(model, str(graphs[-1]))
    (finished / "onebit_evil_ops.py").write_text(EVIL)
    _rerecord(finished)
    env = {k: v for k, v in os.environ.items() if k != "ONEBIT_FAULT"}
    done = subprocess.run([sys.executable, "-m", "onebit", "validate", ".", "--limit", "5", "--no-progress"],
                          cwd=finished, env=dict(env, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    line = one_line_error(done)
    assert "onebit_evil_ops" in line and graphs[-1].name in line
    assert not (finished / "RAN.txt").exists()


# -- 3. one bad label ------------------------------------------------------------------------------------

def _npz_with_label(path: Path, label, dtype=np.int64) -> Path:
    labels = (np.arange(50) % 10).astype(dtype)
    labels[7] = label
    np.savez(path, images=np.zeros((50, 28, 28), np.uint8), labels=labels)
    return path


def _limit_memory(gib: int = 6):
    """preexec_fn: an address-space limit, so an explosion fails fast instead of taking the machine."""
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (gib << 30, gib << 30))
    return apply


def test_validate_with_a_huge_label_fails_at_once(finished, tmp_path):
    """Issue 23 item 3: `onebit validate BUILD --dataset npz:x.npz` with one label 10**9 and no classes: one line naming it, no memory exhaustion."""
    data = _npz_with_label(tmp_path / "x.npz", 10**9)
    env = {k: v for k, v in os.environ.items() if k != "ONEBIT_FAULT"}
    done = subprocess.run([sys.executable, "-m", "hw.check.validate", str(finished), "--dataset", f"npz:{data}",
                           "--no-progress"], cwd=REPO, env=dict(env, PYTHONPATH=str(REPO)), capture_output=True,
                          text=True, timeout=300, preexec_fn=_limit_memory())
    line = one_line_error(done)
    assert "1000000000" in line and "index 7" in line


@pytest.mark.parametrize("label,dtype", [(10**9, np.int64), (2**63, np.uint64), (-1, np.int64)],
                         ids=["1e9", "uint64-2^63", "negative"])
def test_npz_label_out_of_range_refused_for_training_and_build(tmp_path, label, dtype):
    """Issue 23 item 3: an npz label 10**9, uint64 2**63 or -1 (the loader training, build and validate share): refused before any class list is made."""
    from onebit.errors import OnebitError
    from quant_models.custom_data import load_custom

    data = _npz_with_label(tmp_path / "x.npz", label, dtype)
    for split in ("train", "test"):
        with pytest.raises(OnebitError, match=f"label {label} "):
            load_custom(f"npz:{data}", split)


def test_npz_with_an_empty_test_split_is_one_line(tmp_path):
    """Issue 23 item 11: an npz whose test split is empty: one-line error, not a traceback later."""
    from onebit.errors import OnebitError
    from quant_models.custom_data import load_custom

    np.savez(tmp_path / "x.npz", train_images=np.zeros((5, 8, 8), np.uint8), train_labels=np.arange(5),
             test_images=np.zeros((0, 8, 8), np.uint8), test_labels=np.zeros(0, np.int64))
    assert len(load_custom(f"npz:{tmp_path / 'x.npz'}", "train").labels) == 5
    with pytest.raises(OnebitError, match="test split has no images"):
        load_custom(f"npz:{tmp_path / 'x.npz'}", "test")


# -- 4. 16-bit images ------------------------------------------------------------------------------------

def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path):
    """Issue 23 item 4: a `folder:` dataset of 16-bit PNGs: pixels scaled 0..65535 -> 0..255, not clipped to {0, 255}."""
    from quant_models.custom_data import load_custom

    ramp = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)  # 0..65535 in steps of 257
    for cls in ("a", "b"):
        for i in range(5):
            _png(tmp_path / "d" / cls / f"{i}.png", ramp)
    images = load_custom(f"folder:{tmp_path / 'd'}", "train").images
    assert images.dtype == np.uint8 and images.shape[1:] == (1, 16, 16)
    assert np.array_equal(images[0, 0], np.arange(256, dtype=np.uint8).reshape(16, 16))


def test_32_bit_and_float_images_are_refused_with_the_reason(tmp_path):
    """Issue 23 item 4 (sibling): 32-bit integer or float TIFFs (range unknown): refused naming the file and the mode."""
    from PIL import Image
    from onebit.errors import OnebitError
    from quant_models.custom_data import load_custom

    for cls in ("a", "b"):
        for i in range(5):
            path = tmp_path / "d" / cls / f"{i}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(path)
    with pytest.raises(OnebitError, match="32-bit float"):
        load_custom(f"folder:{tmp_path / 'd'}", "train")


def test_decompression_bomb_png_is_one_line(tmp_path):
    """Issue 23 item 11: a decompression-bomb-sized PNG in a `folder:` dataset: one-line error naming it."""
    from PIL import Image
    from onebit.errors import OnebitError
    from quant_models.custom_data import load_custom

    for cls in ("a", "b"):
        for i in range(5):
            _png(tmp_path / "d" / cls / f"{i}.png", np.zeros((8, 8), np.uint8))
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 16  # the same guard Pillow applies to 2 x 89 Mpixel files, at a size a test can write
    try:
        with pytest.raises(OnebitError, match="too many pixels"):
            load_custom(f"folder:{tmp_path / 'd'}", "train")
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def test_empty_class_folder_is_reported(tmp_path, capsys):
    """Issue 23 item 12: an empty class folder: a warning naming it (was accepted without a word)."""
    from quant_models.custom_data import load_custom

    for i in range(5):
        _png(tmp_path / "d" / "a" / f"{i}.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "d" / "b").mkdir()
    load_custom(f"folder:{tmp_path / 'd'}", "train")
    err = capsys.readouterr().err
    assert "class folder" in err and "'b'" in err and "holds no images" in err


# -- 6. a lock from another host -------------------------------------------------------------------------

def test_lock_from_another_host_says_how_to_clear_it_and_unlock_clears_it(tmp_path):
    """Issue 23 item 6: a lock left by a build SIGKILLed in a container (another hostname): the error says `onebit unlock BUILD`, which clears it."""
    from onebit.buildfolder import BuildFolderError

    build = tmp_path / "b"
    build.mkdir()
    (build / LOCK).write_text(json.dumps({"pid": 4242, "host": "container-3f2a", "command": "onebit build"}))
    with pytest.raises(BuildFolderError) as refused:
        BuildFolder(build, "onebit validate", create=False).open()
    message = str(refused.value)
    assert "container-3f2a" in message and f"onebit unlock {build}" in message and str(build / LOCK) in message
    done = cli("onebit", "unlock", build)
    assert done.returncode == 0 and "removed the lock" in done.stdout and "container-3f2a" in done.stdout, done.stderr
    assert not (build / LOCK).exists()
    with BuildFolder(build, "onebit validate", create=False):  # usable again
        pass


def test_unlock_refuses_while_a_local_process_holds_the_lock(tmp_path):
    """Issue 23 item 6: `onebit unlock BUILD` while a live process on this machine holds the lock: refused, lock kept."""
    import socket

    build = tmp_path / "b"
    build.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (build / LOCK).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "command": "onebit build"}))
        line = one_line_error(cli("onebit", "unlock", build))
        assert f"pid {holder.pid}" in line and "running" in line
        assert (build / LOCK).exists()
    finally:
        holder.kill()
        holder.wait()


# -- 7. --arch keys the topology does not have -----------------------------------------------------------

@pytest.mark.parametrize("model,override", [("tfc", "hiden=[256,256,256]"), ("cnv", "hidden=[128,128]"),
                                            ("tfc", "channels=[16,16]")])
def test_unknown_arch_key_is_refused_naming_the_known_ones(model, override, capsys):
    """Issue 23 item 7: `train --model tfc --arch 'hiden=[256,256,256]'` (or cnv with `hidden`): refused naming the known keys, nothing trained."""
    from quant_models.train import main

    assert main(["--model", model, "--arch", override, "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    key = override.split("=")[0]
    assert f"no key '{key}'" in err and ("hidden" in err if model == "tfc" else "channels" in err)
    assert len(err.strip().splitlines()) == 1


# -- 9. damaged --state files ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_epoch_state(tmp_path_factory) -> tuple[Path, list[str]]:
    """A real --state file after 1 of 2 epochs of a tiny TFC run, and the command line that resumes it."""
    from quant_models.train import TrainConfig, train

    root = tmp_path_factory.mktemp("state")
    rng = np.random.default_rng(0)
    np.savez(root / "d.npz", images=rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), labels=np.arange(60) % 3)
    args = dict(model="tfc", dataset=f"npz:{root / 'd.npz'}", epochs=2, progress=False, seed=0)
    train(TrainConfig(**args, state=str(root / "state.pt"), stop_after_epochs=1))
    line = ["--model", "tfc", "--dataset", f"npz:{root / 'd.npz'}", "--epochs", "2", "--seed", "0", "--quiet"]
    return root / "state.pt", line


def _damage(state: dict, how: str) -> None:
    import torch

    if how == "no torch_rng":
        del state["torch_rng"]
    elif how == "bad rng":
        state["torch_rng"] = torch.zeros(7, dtype=torch.uint8)
    elif how == "optimizer groups":
        state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"] * 2
    elif how == "epochs_done":
        state["epochs_done"] = 2  # the run looks finished: no epoch would run, no checkpoint would be written
    elif how == "history":
        state["history"] = "x"


@pytest.mark.parametrize("how", ["no torch_rng", "bad rng", "optimizer groups", "epochs_done", "history"])
def test_damaged_state_file_is_one_line_and_writes_nothing(one_epoch_state, tmp_path, how, capsys):
    """Issue 23 item 9: a --state file with a missing RNG state, a wrong-size one, other optimizer groups or an edited epochs_done: one line, no false "wrote M.pt"."""
    import shutil

    import torch
    from quant_models.train import main

    source, line = one_epoch_state
    state_path = tmp_path / "state.pt"
    shutil.copy(source, state_path)
    state = torch.load(state_path, weights_only=True)
    _damage(state, how)
    torch.save(state, state_path)
    out = tmp_path / "m.pt"
    assert main([*line, "--state", str(state_path), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "damaged" in captured.err and "Traceback" not in captured.err and "wrote" not in captured.out
    assert not out.exists() and not (tmp_path / "m.curve.png").exists()


def test_intact_state_file_still_resumes(one_epoch_state, tmp_path, capsys):
    """Issue 23 item 9 (control): the undamaged --state file resumes and writes the checkpoint it announces."""
    import shutil

    from quant_models.train import main

    source, line = one_epoch_state
    shutil.copy(source, tmp_path / "state.pt")
    out = tmp_path / "m.pt"
    assert main([*line, "--state", str(tmp_path / "state.pt"), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out and out.is_file()


# -- 8. package integrity through __pycache__ ------------------------------------------------------------

def _board(deploy: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "validate_on_board.py"], cwd=deploy, capture_output=True, text=True,
                          timeout=120)


def _plant_pyc(deploy: Path, module: str, code: str) -> Path:
    """Bytecode of `code` where Python looks for `module`'s cache, with a header matching the real source
    (its mtime and size), so an unchecked import would load it instead of the checked .py."""
    import importlib.util
    import marshal

    source = deploy / "driver" / f"{module}.py"
    stat = source.stat()
    target = Path(importlib.util.cache_from_source(str(source)))
    target.parent.mkdir(exist_ok=True)
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little") + \
        (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (stat.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    target.write_bytes(header + marshal.dumps(compile(code, str(source), "exec")))
    return target


@pytest.mark.parametrize("planted", ["packing pyc", "new module pyc", "extension"])
def test_planted_bytecode_in_the_package_is_refused_and_never_runs(finished, planted):
    """Issue 23 item 8: a .pyc at deploy/driver/__pycache__/packing.cpython-311.pyc (or a new module's, or a .so): refused on board and host, never run."""
    deploy = finished / "deploy"
    marker = finished / "PWNED.txt"
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    if planted == "packing pyc":
        name = _plant_pyc(deploy, "packing", code).name
    elif planted == "new module pyc":
        name = _plant_pyc(deploy, "io_spec", code).name.replace("io_spec", "evil")
        (deploy / "driver" / "__pycache__" / f"io_spec.{name.split('.', 1)[1]}").rename(
            deploy / "driver" / "__pycache__" / name)
    else:
        name = "evil.cpython-311-x86_64-linux-gnu.so"
        (deploy / "driver" / name).write_bytes(b"\x7fELF")
    board = _board(deploy)
    assert board.returncode == 2 and name in board.stderr and "no bitstream" not in board.stderr, board.stderr
    assert not marker.exists()
    line = one_line_error(cli("hw.check.validate", finished, "--limit", "5", "--backend", "model", "--no-progress"))
    assert name in line and not marker.exists()


def test_python_s_own_cache_of_the_driver_is_accepted_and_none_is_written(finished):
    """Issue 23 item 8 (control): a __pycache__ Python wrote when a notebook imported the checked driver passes; validate_on_board.py writes none."""
    deploy = finished / "deploy"
    board = _board(deploy)
    assert board.returncode == 2 and "no bitstream" in board.stderr, board.stderr
    assert not list(deploy.rglob("__pycache__"))  # the board script wrote no bytecode into the package
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    subprocess.run([sys.executable, "-c", "import sys; sys.dont_write_bytecode = False; sys.path.insert(0, '.'); "
                    "import driver"], cwd=deploy, check=True, capture_output=True, env=env)
    assert list((deploy / "driver" / "__pycache__").glob("*.pyc"))
    board = _board(deploy)
    assert board.returncode == 2 and "no bitstream" in board.stderr, board.stderr


# -- 10. disk full while copying -------------------------------------------------------------------------

def _sendfile_fills_disk(monkeypatch, inside: str) -> None:
    """os.sendfile (shutil's copy on Linux) fails with ENOSPC for targets under `inside`, as on a full disk:
    shutil then leaves the target file empty and names the source first."""
    import errno

    real = os.sendfile

    def sendfile(out_fd, in_fd, offset, count):
        if inside in os.readlink(f"/proc/self/fd/{out_fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", sendfile)


def test_disk_full_copying_the_driver_leaves_no_empty_module(tmp_path, monkeypatch, capsys):
    """Issue 23 item 10: the disk fills while the build copies the driver: no 0-byte driver/accelerator.py, the message names that file (not the repository's)."""
    from hw.pipeline import copy_driver_package
    from onebit.errors import cli_errors

    package = REPO / "hw" / "driver"
    target = tmp_path / "build" / "driver"
    target.mkdir(parents=True)
    (target / "io.json").write_text("{}")
    _sendfile_fills_disk(monkeypatch, str(tmp_path))
    assert cli_errors(lambda: copy_driver_package(package, target))() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and str(target) in err and str(package) not in err
    assert not [p for p in target.rglob("*") if p.is_file() and p.stat().st_size == 0]
    assert sorted(p.name for p in target.iterdir()) == ["io.json"]  # nothing half-written, no temporary


def test_disk_full_while_packaging_keeps_the_old_package(finished, monkeypatch, capsys):
    """Issue 23 item 11: the disk fills while `python -m hw.deploy` copies the driver into the new package: one line (not shutil.Error), old deploy/ and deploy.zip kept byte for byte."""
    from hw.deploy import main as deploy_main

    before = _tree(finished)
    _sendfile_fills_disk(monkeypatch, ".deploy.tmp-")
    assert deploy_main([str(finished), "--no-progress"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "deployment package" not in line]
    assert len(lines) == 1 and lines[0].startswith("onebit: ") and "No space left on device" in lines[0], err
    assert "Traceback" not in err and _tree(finished) == before


# -- 11. one line instead of a traceback -----------------------------------------------------------------

def test_bad_onebit_levels_variable_fails_before_the_build(tfc_build, tmp_path):
    """Issue 23 item 11: `ONEBIT_LEVELS=garbage onebit build`: one line naming the variable before any FINN work (was a traceback after the build)."""
    out = tmp_path / "b"
    line = one_line_error(cli("hw.pipeline", tfc_build / "model.pt", "--out", out, "--no-progress",
                              env={"ONEBIT_LEVELS": "garbage"}))
    assert "$ONEBIT_LEVELS='garbage'" in line and "unknown level" in line
    assert not out.exists() or not any(out.iterdir())


def test_bad_worker_count_variable_is_one_line(monkeypatch):
    """Issue 23 item 11: `NUM_DEFAULT_WORKERS=abc`: one line naming it when FINN is prepared (was a ValueError mid-build)."""
    from hw.finn.env import FinnEnvironmentError, prepare_finn

    monkeypatch.setenv("NUM_DEFAULT_WORKERS", "abc")
    before = dict(os.environ)
    with pytest.raises(FinnEnvironmentError, match="NUM_DEFAULT_WORKERS='abc'"):
        prepare_finn("/nonexistent/never-created")
    assert dict(os.environ) == before  # refused before anything was set up


def test_onnx_opset_99_is_one_line(tmp_path):
    """Issue 23 item 11: a model.onnx declaring ONNX opset 99: one line naming the opset (was a traceback)."""
    from onnx import TensorProto, helper

    from export.onnx_domains import UnsupportedDomain
    from export.qonnx_import import load_clean

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 99)])
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(UnsupportedDomain, match="opset 99"):
        load_clean(tmp_path / "m.onnx")


def test_dataset_with_more_classes_than_the_model_fails_before_comparing(finished, tmp_path):
    """Issue 23 item 11: `onebit validate --dataset npz:` with 12 classes for a 10-class model: one line before any work (was an IndexError after it)."""
    labels = np.arange(60) % 12
    np.savez(tmp_path / "x.npz", images=np.zeros((60, 28, 28), np.uint8), labels=labels)
    before = _tree(finished)
    line = one_line_error(cli("hw.check.validate", finished, "--dataset", f"npz:{tmp_path / 'x.npz'}",
                              "--backend", "model", "--no-progress"))
    assert "labels up to 11" in line and "10 classes" in line
    assert _tree(finished) == before  # nothing written


@pytest.mark.parametrize("sidecar,message", [({"dataset": 5}, "must be a dataset name"),
                                             ({"input": {"shape": [1, 28.9, 28]}}, "is not a shape"),
                                             ({"input": {"shape": [1, True, 28]}}, "is not a shape")],
                         ids=["dataset-5", "shape-28.9", "shape-true"])
def test_sidecar_values_of_the_wrong_type_are_refused(tmp_path, sidecar, message):
    """Issue 23 items 11, 12: a sidecar with `"dataset": 5` (traceback) or shape 28.9 (read as 28): refused with one line."""
    from export.input_declaration import ImportRefused, declare_input

    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "m.onnx.onebit.json").write_text(json.dumps(sidecar))
    with pytest.raises(ImportRefused, match=message):
        declare_input(tmp_path / "m.onnx")


def test_negative_python_samples_refused_for_a_model_onnx(tmp_path):
    """Issue 23 item 12: `onebit build model.onnx --python-samples -5`: refused as for a checkpoint (was ignored)."""
    _evil_onnx(tmp_path / "model.onnx")  # never read: the option is checked first
    line = one_line_error(cli("hw.pipeline", tmp_path / "model.onnx", "--python-samples", "-5", "--input-scale", "1",
                              "--dataset", "fashion-mnist", "--out", tmp_path / "b", "--no-progress"))
    assert "--python-samples must be >= 0" in line and not (tmp_path / "RAN.txt").exists()


# -- 12. minor ones --------------------------------------------------------------------------------------

def test_huge_batch_size_is_refused_not_a_memory_error(finished):
    """Issue 23 item 12: `Accelerator(batch_size=10**12)` or setting it before `throughput_test()`: DriverError with the limit, no MemoryError."""
    from hw.check.accel_model import AcceleratorModel
    from hw.driver import Accelerator, DriverError

    io_json = finished / "driver" / "io.json"
    model = AcceleratorModel.from_build(finished)
    with pytest.raises(DriverError, match="batch_size 1,000,000,000,000 needs"):
        Accelerator(io_json, backend="model", model=model, batch_size=10**12)
    accelerator = Accelerator(io_json, backend="model", model=model, batch_size=4)
    with pytest.raises(DriverError, match="pass a smaller batch_size"):
        accelerator.batch_size = 10**12
    with pytest.raises(DriverError, match="n_batches"):
        accelerator.throughput_test(0)
    assert accelerator.throughput_test()["batch_size"] == 4


def test_board_commands_quote_a_build_folder_with_spaces(finished, tmp_path):
    """Issue 23 item 12: a build folder named `my build`: the package README's shell commands quote it (one word each)."""
    import shlex

    from hw.deploy import _docker_command

    spaced = tmp_path / "my build"
    finished.rename(spaced)
    done = cli("hw.deploy", spaced, "--no-progress", "--samples", "10")
    assert done.returncode == 0, done.stderr[-2000:]
    readme = (spaced / "deploy" / "README.md").read_text()
    commands = [line.strip() for line in readme.splitlines() if line.strip().startswith(("cd ", "sudo unzip", "scp "))]
    cd_deploy = [c for c in commands if c.startswith("cd ") and c.endswith("deploy'")]
    assert cd_deploy and shlex.split(cd_deploy[0])[1].endswith("onebit-my build/deploy"), commands
    assert shlex.split(_docker_command(spaced, "Pynq-Z1"))[-1] == "/build/my build"


# -- 5. deploy repackaging a changed build ---------------------------------------------------------------

def test_deploy_refuses_a_build_whose_model_pt_was_replaced(finished):
    """Issue 23 item 5: BUILD/model.pt replaced by another same-architecture checkpoint, then `python -m hw.deploy`: refused, package and report.json kept byte for byte."""
    import torch

    checkpoint = torch.load(finished / "model.pt", weights_only=True)
    name = next(k for k, v in checkpoint["state_dict"].items() if k.endswith("weight") and v.ndim == 2)
    checkpoint["state_dict"][name] = -checkpoint["state_dict"][name]  # another model of the same architecture
    torch.save(checkpoint, finished / "model.pt")
    before = _tree(finished)
    line = one_line_error(cli("hw.deploy", finished, "--no-progress"))
    assert "model.pt changed since the build" in line
    assert _tree(finished) == before


def test_probe_never_touches_a_user_file_named_like_it(tmp_path):
    """Issue 23 item 1 (sibling): a user file `.onebit-probe-<pid>` with this process' pid: the writability probe neither truncates nor removes it."""
    folder = tmp_path / "b"
    folder.mkdir()
    mine = folder / f".onebit-probe-{os.getpid()}"
    mine.write_bytes(b"my data\n")
    with BuildFolder(folder, "test"):
        pass
    assert mine.read_bytes() == b"my data\n"


def test_autofold_cli_checks_domains_before_reading(tmp_path, capsys):
    """Issue 23 item 2 (sibling): `python -m hw.finn.autofold model.onnx` of a foreign-domain model: refused before qonnx reads it, nothing imported."""
    from hw.finn.autofold.cli import main

    _evil_onnx(tmp_path / "model.onnx")
    sys.path.insert(0, str(tmp_path))
    try:
        assert main([str(tmp_path / "model.onnx"), "--board", "Pynq-Z1", "--out", str(tmp_path / "out")]) == 2
    finally:
        sys.path.remove(str(tmp_path))
    assert "onebit_evil_ops" in capsys.readouterr().err
    assert "onebit_evil_ops" not in sys.modules and not (tmp_path / "RAN.txt").exists()
