"""Launching a stage from a notebook. A kernel cannot host a multi-process run, so for `nproc > 1` the
notebook builds the command here, runs it as a subprocess and streams its log:

    cmd = build_command("2_sft", nproc=2)              # torchrun --nproc_per_node 2 -m omni_core.train ...
    run(cmd, log_file="logs/2_sft/train.log")          # prints the tqdm bar and log lines as they come

`train(stage, ...)` does that when the run needs several processes and otherwise trains in the kernel
itself, which has imported torch and transformers already (a second interpreter would spend ~10 s
importing them again, for every stage of the pipeline). It ends with a few lines for the reader
(`describe_summary`); the full summary is its return value and the last line of `log_file`.

`launcher`: `python` (one process), `torchrun` (one node or several with a rendezvous address) or
`deepspeed` (its launcher; a hostfile names the nodes and their GPU slots for multi-node runs).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

Launcher = Literal["auto", "python", "torchrun", "deepspeed"]
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"   # the CLI's log lines, and a notebook's (`train`)


def write_hostfile(hosts: dict[str, int], path: str | Path) -> Path:
    """Write a DeepSpeed hostfile: one `hostname slots=N` line per node (N = GPUs on that node)."""
    path = Path(path)
    path.write_text("".join(f"{h} slots={n}\n" for h, n in hosts.items()))
    return path


def train_args(stage: str, params: str | Path = "params.yaml", profile: str | None = None,
               sets: Iterable[str] = ()) -> list[str]:
    """Arguments of `python -m omni_core.train` (after the module name)."""
    args = ["--stage", stage, "--params", str(params)]
    if profile:
        args += ["--profile", profile]
    for s in sets:
        args += ["--set", s]
    return args


def build_command(stage: str, *, params: str | Path = "params.yaml", profile: str | None = None,
                  sets: Sequence[str] = (), nproc: int | None = None, launcher: Launcher = "auto",
                  nnodes: int = 1, node_rank: int = 0, master_addr: str = "127.0.0.1", master_port: int = 29500,
                  hostfile: str | Path | None = None, python: str = sys.executable) -> list[str]:
    """The command that trains `stage` with `nproc` processes per node (default: `train.nproc`).

    `auto` picks `python` for one process, the `deepspeed` launcher when a hostfile is given, else
    `torchrun`. Multi-node: run the same torchrun command on every node with its `node_rank`, or
    once with the deepspeed launcher and a hostfile (it reaches the nodes over ssh).
    """
    if nproc is None:
        from omni_core.config import load_config

        nproc = load_config(params, profile=profile).train.nproc
    if launcher == "auto":
        launcher = "deepspeed" if hostfile else ("python" if nproc == 1 and nnodes == 1 else "torchrun")
    args = train_args(stage, params, profile, sets)
    if launcher == "python":
        if nproc != 1 or nnodes != 1:
            raise ValueError(f"launcher='python' runs one process; got nproc={nproc}, nnodes={nnodes}: "
                             f"use launcher='torchrun' or 'deepspeed'")
        return [python, "-m", "omni_core.train", *args]
    if launcher == "torchrun":
        dist = [f"--nproc_per_node={nproc}", f"--nnodes={nnodes}", f"--node_rank={node_rank}",
                f"--master_addr={master_addr}", f"--master_port={master_port}"]
        return [python, "-m", "torch.distributed.run", *dist, "-m", "omni_core.train", *args]
    if launcher == "deepspeed":
        ds = [python, "-m", "deepspeed.launcher.runner", f"--master_port={master_port}"]
        if hostfile:
            ds += [f"--hostfile={hostfile}", f"--master_addr={master_addr}"]
            if nnodes > 1:
                ds += [f"--num_nodes={nnodes}"]
        ds += [f"--num_gpus={nproc}"]
        return [*ds, "--module", "omni_core.train", *args]
    raise ValueError(f"unknown launcher {launcher!r}; choose auto, python, torchrun or deepspeed")


def run(cmd: Sequence[str], log_file: str | Path | None = None, env: dict | None = None,
        cwd: str | Path | None = None, echo: bool = True) -> int:
    """Run `cmd`, streaming its merged stdout/stderr to this process's stdout (a notebook cell) and to
    `log_file`; raise `subprocess.CalledProcessError` with the log's tail when it fails."""
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_file, "a") if log_file else None
    tail: deque[str] = deque(maxlen=40)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env,
                            cwd=cwd)
    try:
        assert proc.stdout is not None
        # read what has arrived, not lines: tqdm redraws its bar with '\r' and no newline
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            text = chunk.decode(errors="replace")
            if echo:
                sys.stdout.write(text)
                sys.stdout.flush()
            if log:
                log.write(text)
            tail.extend(text.splitlines())
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if log:
            log.close()
    if rc != 0:
        raise subprocess.CalledProcessError(rc, list(cmd), output="\n".join(tail))
    return rc


def _number(value: float, percent: bool) -> str:
    return f"{value:.1f} %" if percent else f"{value:.3f}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def describe_summary(summary: dict) -> str:
    """A stage's summary in a few lines: steps, wall time and throughput, then every metric measured at the
    start and the end of the stage (val loss, an encoder warm-up's headline metric and its chance level)."""
    stage = summary.get("stage", "stage")
    if summary.get("skipped"):
        return f"{stage} skipped: the next stage starts from {summary.get('next_stage_starts_from', 'the stage before')}"
    head = f"{stage} finished: {summary.get('steps', '?')} steps"
    if isinstance(summary.get("wall_s"), float):
        head += f" in {_duration(summary['wall_s'])}"
    if summary.get("tokens_per_s"):
        head += f", {summary['tokens_per_s']:,.0f} tokens/s"
    lines = [head]
    measured = [k[:-len("_start")] for k in summary if k.endswith("_start") and f"{k[:-len('_start')]}_end" in summary]
    for name in sorted(measured, key=lambda n: n != "val_loss"):       # the loss first, then in the stage's order
        words = name.split("_")
        percent = "accuracy" in words or "wer" in words
        label = " ".join(w.upper() if w in ("wer", "ctc") else w for w in words)
        line = f"  {label}: {_number(summary[f'{name}_start'], percent)} -> {_number(summary[f'{name}_end'], percent)}"
        if isinstance(summary.get(f"{name}_chance"), float):
            line += f" (chance {_number(summary[f'{name}_chance'], percent)})"
        lines.append(line)
    return "\n".join(lines)


def progress_default() -> bool:
    """Whether a run draws progress bars: no when tqdm's own switch TQDM_DISABLE is set (any non-empty value,
    as tqdm reads it), which `omni_core.notebooks.run` sets for the kernels that execute reports. The CLI and
    `train` pass it on, because `train_stage` hands tqdm an explicit `disable=` that overrides tqdm's check."""
    return not os.environ.get("TQDM_DISABLE")


def train(stage: str, *, params: str | Path = "params.yaml", profile: str | None = None,
          sets: Sequence[str] = (), log_file: str | Path | None = None, progress: bool | None = None,
          **launch: object) -> dict | None:
    """Train `stage`: in this process when it takes one (`train.nproc == 1` and no launcher options),
    returning `train_stage`'s summary; else through `build_command(..., **launch)` + `run` (returns None).
    Either way the log lines (not the progress bar) are appended to `log_file`.

    `progress`: show the in-process run's progress bars; by default unless `TQDM_DISABLE` is set.
    """
    from omni_core.config import load_config, parse_overrides

    cfg = load_config(params, overrides=parse_overrides(list(sets)) or None, profile=profile)
    if (launch or cfg.train.nproc != 1) and cfg.stage(stage).enabled:   # a disabled stage only writes a record
        # nproc from this config, which holds the `sets` (build_command alone would read params without them)
        run(build_command(stage, params=params, profile=profile, sets=sets, **{"nproc": cfg.train.nproc, **launch}),
            log_file=log_file)
        return None
    import torch

    from omni_core.train.loop import train_stage

    # transformers' save_pretrained imports deepspeed (accelerate looks for its engine class), whose accelerator
    # probe warns on stdout wherever CUDA is missing; name the CPU, as `deepspeed_cpu` does for a DeepSpeed run
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    # the CLI's log lines, in the cell and in `log_file`, for the package's loggers only
    pkg_log = logging.getLogger("omni_core")
    cell = logging.StreamHandler(sys.stdout)
    cell.addFilter(lambda record: not getattr(record, "log_file_only", False))
    handlers: list[logging.Handler] = [cell]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    level = pkg_log.level
    pkg_log.setLevel(logging.INFO)
    for h in handlers:
        h.setFormatter(logging.Formatter(LOG_FORMAT))
        pkg_log.addHandler(h)
    try:
        result = train_stage(cfg, stage, progress=progress_default() if progress is None else progress)
        summary = {k: v for k, v in result.items() if k not in ("rank", "model")}
        pkg_log.info("%s", describe_summary(summary))
        # the whole summary (parameter counts, throughputs, every metric) for the log file, not the reader
        pkg_log.info("%s summary: %s", stage, json.dumps(summary, default=str), extra={"log_file_only": True})
        return summary
    finally:
        pkg_log.setLevel(level)
        for h in handlers:
            pkg_log.removeHandler(h)
            h.flush()
        if log_file:
            handlers[-1].close()
