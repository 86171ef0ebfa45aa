"""Runs a sweep's trainings and builds as Ray tasks, each an ordinary onebit command in its own folder.

Why Ray: it is the distributed engine Python ML work already uses (Ray Tune), it runs on one machine with no
setup (`ray.init` starts a local instance) and on Slurm or Kubernetes clusters through Ray's own launchers
(`--address` connects to a running cluster). Each run is a Ray task that starts the same command a user would
(`python -m quant_models.train ...`, `python -m onebit build --config ...`) as a child process: a run's
result equals the same run done alone, a crash or a memory blow-up stays in its run, and the run's log is a
file of its own. A build depends on its training through Ray's object references (Ray starts it when the
training's task has returned).

Resumable: a run's folder gets run.json last, atomically, with the run's parameters and the sha256 of its
result (model.pt, or the build's report.json / step record). A rerun skips every run whose run.json says
finished for the same parameters and whose result file still has that hash; failed and unfinished runs run
again. A failing run is recorded with its one-line error and does not stop the others. Ctrl-C (or the driver
killed) stops the children with it (the children die with their Ray worker: PR_SET_PDEATHSIG), and nothing
half-done carries a run.json.

`run_commands` runs any commands the same way (CommandTask: a folder, a command, the file it leaves when finished,
CPUs and GPUs, the tasks it waits for) for callers whose runs keep a layout and resume rule of their own:
bench/estimators_full.py's trainings.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onebit.atomic import write_text_atomic
from onebit.buildfolder import sha256_file
from onebit.errors import OnebitError, first_line
from onebit.temporaries import pid_alive
from onebit.sweep.spec import Run, expand, read_spec, resources

RUN_FILE = "run.json"
RUN_FORMAT = "onebit-sweep-run"
SWEEP_FILE = "sweep.json"
LOCK_FILE = ".onebit-sweep.lock"
REPO = Path(__file__).resolve().parents[2]


# -- one run (executed in a Ray worker) ---------------------------------------------------------------------

def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The run's process dies with the Ray worker that started it (Linux): no orphan after Ctrl-C or a kill."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _train_command(run: Run, folder: Path) -> list[str]:
    command = [sys.executable, "-m", "quant_models.train", "--out", str(folder / "model.pt"),
               "--state", str(folder / "train.state"), "--quiet"]
    for name, value in run.params.items():
        flag = "--" + name.replace("_", "-")
        if name == "hparam":
            values = value if isinstance(value, list) else [value]
            for item in values:
                command += [flag, str(item)]
        elif name == "arch":
            items = value.items() if isinstance(value, dict) else []
            for key, item in items:
                command += [flag, f"{key}={json.dumps(item)}"]
            if not isinstance(value, dict):
                for item in value if isinstance(value, list) else [value]:
                    command += [flag, str(item)]
        elif value is not None:
            command += [flag, str(value)]
    return command


def _build_command(run: Run, folder: Path, checkpoint: str) -> list[str]:
    from hw.options import BuildOptions

    options = BuildOptions.from_dict({**run.params, "checkpoint": checkpoint}, where=run.id)
    write_text_atomic(folder / "build_options.json", options.to_json())
    # the options file holds what describes the build; per-run controls (--stop-after) go on the command line
    per_run = [f"--{name.replace('_', '-')}={value}" for name, value in options.values(saved_only=False).items()
               if name not in options.values() and value not in (None, False)]
    return [sys.executable, "-m", "onebit", "build", "--config", str(folder / "build_options.json"),
            "--out", str(folder / "build"), "--no-progress", *per_run]


def _result_file(kind: str, folder: Path) -> Path | None:
    if kind == "train":
        return folder / "model.pt"
    for name in ("report.json", "finn/step_record.json"):  # a finished build, or one stopped by --stop-after
        if (folder / "build" / name).is_file():
            return folder / "build" / name
    return None


def _last_error(log: Path, code: int) -> str:
    """The command's own one-line error (onebit prints `onebit: ...`), else the last line of its log."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("onebit:"):
            return line
    if code == 1 and any("first divergent level" in line for line in lines):
        divergent = next(line for line in reversed(lines) if "first divergent level" in line)
        return f"verification failed ({divergent})"
    return (lines[-1][:300] if lines else "") + f" (exit {code})"


def metrics_of(kind: str, folder: Path) -> dict[str, Any]:
    """What the results table shows of one finished run, read from the files it wrote."""
    if kind == "train":
        from quant_models.checkpoint import read_checkpoint

        metrics = read_checkpoint(folder / "model.pt").get("metrics") or {}
        return {"accuracy": metrics.get("test_accuracy")}
    build = folder / "build"
    if (build / "report.json").is_file():
        report = json.loads((build / "report.json").read_text())
        levels = report["verification"]["levels"]
        from hw.rtl.synth_report import design_figures

        synth = design_figures(report.get("resources_synth") or {"executed": False})
        return {"hw_accuracy": report.get("accuracy"),
                # an imported model's reference ties are explained, not mismatches (hw/check/ties.py)
                "mismatches": sum(int(e.get("unexplained_mismatches", e.get("integer_mismatches")) or 0)
                                  for e in levels.values() if e.get("executed")),
                "levels_failed": [name for name, e in levels.items() if e.get("status") == "failed"],
                "fps": report["estimate"]["fps"], "lut": report["resources"]["total"]["LUT"],
                "bram_18k": report["resources"]["total"]["BRAM_18K"], "board": report["board"]["name"],
                "synth_lut": synth["lut"], "fmax_mhz": synth["fmax_mhz"]}
    autofold = build / "autofold_report.json"  # stopped after the estimates: auto-fold's own figures
    if autofold.is_file():
        result = json.loads(autofold.read_text())
        return {"fps": result.get("fps"), "lut": (result.get("totals") or {}).get("LUT"),
                "bram_18k": (result.get("totals") or {}).get("BRAM_18K"), "board": result.get("board")}
    return {}


def execute(run_dict: dict[str, Any], folder: str, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run, start to end: its command in `folder`, then run.json. Returns the run.json dict."""
    run, path = Run(**run_dict), Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / RUN_FILE).unlink(missing_ok=True)  # a rerun: nothing claims to be finished while it runs
    started = time.time()
    record: dict[str, Any] = {"format": RUN_FORMAT, "version": 1, "kind": run.kind, "key": run.key,
                              "params": run.params, "varying": run.varying, "depends_on": run.depends_on,
                              "host": os.uname().nodename}
    log = path / "run.log"
    try:
        if run.kind == "build" and run.depends_on is not None and (training or {}).get("status") != "finished":
            raise OnebitError(f"its training train/{run.depends_on} did not finish: "
                              f"{(training or {}).get('error') or 'no result'}")
        if run.kind == "train":
            command = _train_command(run, path)
        else:
            checkpoint = run.params.get("checkpoint") or str(Path(training["folder"]) / "model.pt")
            command = _build_command(run, path, checkpoint)
        record["command"] = command
        env = {**os.environ, "PYTHONPATH": _task_pythonpath(),
               "ONEBIT_PROGRESS": "plain"}
        with open(log, "w") as out:
            code = subprocess.call(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   preexec_fn=_die_with_parent)
        result = _result_file(run.kind, path)
        if code != 0 or result is None:
            raise OnebitError(_last_error(log, code) if code else f"no result file in {path} (exit 0)")
        record.update(status="finished", error=None,
                      result={"file": str(result.relative_to(path)), "sha256": sha256_file(result)},
                      metrics=metrics_of(run.kind, path))
    except OnebitError as error:
        record.update(status="failed", error=str(error), result=None, metrics={})
    except Exception as error:  # noqa: BLE001 - the sweep goes on; this run says what broke
        record.update(status="failed", error=first_line(error), result=None, metrics={})
    record["seconds"] = round(time.time() - started, 1)
    record["folder"] = str(path)
    write_text_atomic(path / RUN_FILE, json.dumps(record, indent=2, default=str) + "\n")
    return record


def finished_record(run: Run, folder: Path) -> dict[str, Any] | None:
    """run.json of an earlier finished run of exactly these parameters whose result is intact, else None."""
    try:
        record = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    if record.get("format") != RUN_FORMAT or record.get("status") != "finished":
        return None
    if json.dumps(record.get("params"), sort_keys=True, default=str) != json.dumps(run.params, sort_keys=True,
                                                                                    default=str):
        return None
    result = record.get("result") or {}
    path = folder / str(result.get("file", ""))
    if not result.get("file") or not path.is_file() or sha256_file(path) != result.get("sha256"):
        return None
    record["folder"] = str(folder)
    return record


# -- the driver -----------------------------------------------------------------------------------------------

class SweepLock:
    """One driver per sweep folder (or any work folder whose runs a driver starts and resumes, e.g.
    bench/estimators_full.py's); a dead driver's lock (same host) is taken over."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE

    def __enter__(self) -> "SweepLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                os.write(fd, json.dumps({"pid": os.getpid(), "host": os.uname().nodename}).encode())
                os.close(fd)
                return self
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    holder = {}
                if holder.get("host") == os.uname().nodename and not pid_alive(int(holder.get("pid", 0))):
                    self.path.unlink(missing_ok=True)
                    continue
                raise OnebitError(f"{self.path.parent}: a sweep driver is running there (pid {holder.get('pid')}, "
                                  f"host {holder.get('host')}); wait for it, or remove {self.path} if it is gone")
        raise OnebitError(f"{self.path}: could not take the sweep lock")

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def run_sweep(spec_path: str | Path, out: str | Path | None = None, address: str | None = None,
              num_cpus: int | None = None, say=print) -> dict[str, Any]:
    """Run (or resume) a sweep; returns {"folder", "runs": [run.json dicts], "seconds"}. Writes the results
    table and plots (onebit/sweep/results.py) at the end, also after Ctrl-C with what finished."""
    from onebit.sweep.results import write_results

    spec_path = Path(spec_path)
    spec = read_spec(spec_path)
    runs = expand(spec, base=spec_path.resolve().parent)
    folder = Path(out or Path("sweeps") / str(spec["name"])).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with SweepLock(folder):
        write_text_atomic(folder / SWEEP_FILE, json.dumps(
            {"format": "onebit-sweep", "version": 1, "spec": spec, "spec_file": str(spec_path.resolve()),
             "runs": [asdict(r) for r in runs]}, indent=2, default=str) + "\n")
        records: dict[str, dict[str, Any]] = {}
        try:
            _run_all(spec, runs, folder, address, num_cpus, say, records)
        finally:  # after Ctrl-C too: the table of what finished, the rest marked not run
            seconds = time.time() - started
            ordered = [records.get(r.id) or {"kind": r.kind, "key": r.key, "varying": r.varying, "status": "not run",
                                            "error": None, "metrics": {}, "seconds": None} for r in runs]
            write_results(folder, str(spec["name"]), ordered, seconds)
    return {"folder": folder, "runs": ordered, "seconds": seconds}


def _run_all(spec: dict[str, Any], runs: list[Run], folder: Path, address: str | None, num_cpus: int | None,
             say, records: dict[str, dict[str, Any]]) -> None:
    todo = []
    for run in runs:
        earlier = finished_record(run, folder / run.kind / run.key)
        if earlier is not None:
            records[run.id] = {**earlier, "skipped": True}
        else:
            todo.append(run)
    say(f"sweep {spec['name']}: {len(runs)} runs, {len(runs) - len(todo)} finished earlier, {len(todo)} to run "
        f"in {folder}")
    if not todo:
        return
    import ray

    start_ray(address, num_cpus)
    gpus = ray.cluster_resources().get("GPU", 0)
    remote = ray.remote(execute)
    refs: dict[str, Any] = {}
    pending: dict[Any, Run] = {}
    for run in todo:
        res = resources(spec, run.kind)
        params = dict(run.params)
        if run.kind == "train" and gpus and "device" not in params and not res.get("num_gpus"):
            params["device"], res["num_gpus"] = "cuda", 1  # the trainings on the cluster's GPUs
        task_run = Run(run.kind, run.key, params, run.depends_on, run.varying)
        dependency = None
        if run.depends_on is not None:
            dependency = refs.get(f"train/{run.depends_on}") or ray.put(records.get(f"train/{run.depends_on}"))
        ref = remote.options(**{k: v for k, v in res.items() if v is not None}).remote(
            asdict(task_run), str(folder / run.kind / run.key), dependency)
        refs[run.id] = ref
        pending[ref] = run
    done = len(runs) - len(todo)

    def finished(record: dict[str, Any], run: Run) -> None:
        nonlocal done
        records[run.id] = {"kind": run.kind, "key": run.key, "varying": run.varying, "metrics": {}, **record}
        done += 1
        status = record["status"] + ("" if record["status"] == "finished" else f": {record['error']}")
        seconds = "" if record.get("seconds") is None else f" ({record['seconds']:.0f} s)"
        say(f"[{done}/{len(runs)}] {run.id}: {status}{seconds}")

    try:
        gather(pending, finished)
    except KeyboardInterrupt:
        say(f"sweep interrupted: {done} of {len(runs)} runs done; rerun the same command to continue "
            "(finished runs are skipped)")
        raise


def _task_pythonpath() -> str:
    """PYTHONPATH of a run's process and of Ray's workers: this checkout first, so they import this onebit."""
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


def start_ray(address: str | None, num_cpus: int | None) -> None:
    """Connect to the Ray cluster at `address`, or start a local instance with `num_cpus` CPUs (None: all);
    the tasks import onebit from this checkout (a cluster's nodes share it, see docs/sweeps.md)."""
    import ray

    # a task that asks for no GPU keeps the node's CUDA_VISIBLE_DEVICES (Ray's coming default would empty it)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if not address:
        # Ray's memory monitor kills its own workers when the whole machine is short of memory, whoever uses it: on a
        # machine shared with other work that kills (and retries) runs that are not the cause; the kernel's OOM
        # killer still acts on real exhaustion. A cluster keeps Ray's setting. (Set the variable to keep the monitor.)
        os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    if not ray.is_initialized():
        ray.init(address=address or "local", num_cpus=None if address else num_cpus, include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"PYTHONPATH": _task_pythonpath()}})


def gather(pending: dict[Any, Any], on_record, deadline: float | None = None) -> list[Any]:
    """Wait for the Ray tasks of `pending` (object ref -> what the caller calls it), calling
    `on_record(record, name)` as each returns. At `deadline` (a time.time()) or on Ctrl-C the rest are cancelled
    (their processes killed: a run keeps only what it saved atomically) and Ray is shut down; returns the names of
    the runs cancelled at the deadline (Ctrl-C re-raises)."""
    import ray

    try:
        while pending:
            # short waits: a blocking ray.wait never lets Python run its SIGINT handler (Ctrl-C would not stop it)
            timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.time()))
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
            if not ready and (deadline is None or time.time() < deadline):
                continue
            if not ready:  # the deadline
                stopped = list(pending.values())
                for ref in pending:
                    ray.cancel(ref, force=True)
                pending.clear()
                return stopped
            for ref in ready:
                name = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as error:  # the task's worker or node died (after Ray's retries)
                    record = {"status": "failed", "error": f"Ray: {first_line(error)}", "seconds": None}
                on_record(record, name)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        ray.shutdown()
    return []


# -- any command as a Ray task --------------------------------------------------------------------------------

@dataclass
class CommandTask:
    """A command run in `folder` as a Ray task, for callers with a run layout and resume rule of their own
    (bench/estimators_full.py's trainings): finished when it exits 0 and left `result` in `folder`."""

    id: str
    folder: str
    command: list[str]
    result: str
    num_cpus: float = 1
    num_gpus: float = 0
    depends_on: list[str] = field(default_factory=list)  # ids of earlier tasks that must finish first
    env: dict[str, str] = field(default_factory=dict)
    log: str = "run.log"  # in `folder`, appended to (a resumed run's log keeps its earlier sessions)
    incomplete_exit: int | None = None  # the command's exit status for "stopped early, resumable"


def execute_command(task_dict: dict[str, Any], *dependencies: dict[str, Any]) -> dict[str, Any]:
    """One CommandTask in a Ray worker (its dependencies' records resolved by Ray); returns its record: status
    finished, incomplete (stopped early by its own choice), failed (with the one-line error), or not run (a task it
    depends on did not finish)."""
    task = CommandTask(**task_dict)
    folder = Path(task.folder)
    started = time.time()
    record: dict[str, Any] = {"id": task.id, "folder": task.folder, "host": os.uname().nodename, "exit": None,
                              "error": None}
    unfinished = [f"{d['id']} {d.get('status')}" for d in dependencies if d.get("status") != "finished"]
    if unfinished:  # a later call runs it, once what it waits for has finished
        record.update(status="not run", error=f"waits for {', '.join(unfinished)}")
    else:
        env = {**os.environ, "PYTHONPATH": _task_pythonpath(),
               **task.env}
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / task.log
        try:
            with open(log, "a") as out:
                code = subprocess.call(task.command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
                                       preexec_fn=_die_with_parent)
        except OSError as error:
            record.update(status="failed", error=f"{task.command[0]}: {error.strerror}")
        else:
            record["exit"] = code
            if code == 0 and (folder / task.result).is_file():
                record["status"] = "finished"
            elif task.incomplete_exit is not None and code == task.incomplete_exit:
                record["status"] = "incomplete"
            else:
                record.update(status="failed", error=_last_error(log, code) if code else
                              f"no {task.result} in {folder} (exit 0)")
    record["seconds"] = round(time.time() - started, 1)
    return record


def run_commands(tasks: list[CommandTask], address: str | None = None, num_cpus: int | None = None,
                 on_record=None, deadline: float | None = None) -> dict[str, dict[str, Any]]:
    """Run `tasks` as Ray tasks (local Ray with `num_cpus` CPUs, or the cluster at `address`), each asking for its
    own CPUs and GPUs, a task after the ones it depends on (listed before it); `on_record(record)` as each ends.
    Returns every task's record by id; the ones cancelled at `deadline` have status "stopped"."""
    import ray

    if not tasks:
        return {}
    start_ray(address, num_cpus)
    if any(t.num_gpus for t in tasks) and not ray.cluster_resources().get("GPU"):
        ray.shutdown()
        raise OnebitError("the runs ask for GPUs but Ray sees none here; train with --device cpu, or give the "
                          "--address of a Ray cluster with GPU nodes")
    remote = ray.remote(execute_command)
    refs: dict[str, Any] = {}
    pending: dict[Any, str] = {}
    for task in tasks:
        missing = [d for d in task.depends_on if d not in refs]
        if missing:
            ray.shutdown()
            raise OnebitError(f"run {task.id} depends on {', '.join(missing)}, which is not an earlier run of the sweep")
        ref = remote.options(num_cpus=task.num_cpus, num_gpus=task.num_gpus).remote(asdict(task), *(refs[d] for d in task.depends_on))
        refs[task.id] = ref
        pending[ref] = task.id
    records: dict[str, dict[str, Any]] = {}

    def ended(record: dict[str, Any], name: str) -> None:
        records[name] = {"id": name, "exit": None, **record}
        if on_record is not None:
            on_record(record)

    for name in gather(pending, ended, deadline):
        records[name] = {"id": name, "status": "stopped", "error": "stopped at the deadline", "exit": None,
                         "seconds": None, "folder": next(t.folder for t in tasks if t.id == name)}
        if on_record is not None:
            on_record(records[name])
    return records
