"""Data benchmark (JSON on stdout): tiny data preparation time, the share of real (non-pad) tokens
with sequence packing vs padding on the SFT mixture, side by side, and what indexing a large manifest costs.

    python benchmarks/bench_data.py [--params params.yaml] [--out DIR] [--reuse DIR] [--batches 20]
    python benchmarks/bench_data.py --index-only [--sizes 100000 1000000]

Indexing (issue 33): synthetic manifests of 100K and 1M lines (the paper's SFT set is ~600K samples),
each measured in a fresh subprocess per (size, what) so peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`
of that process) is its own: `index` = `ManifestIndex.build` (offsets + tasks), `dataset` = `OmniDataset`
(the index, then every record checked once: schema, paths, media exist), `eager` = `read_manifest`, every
record decoded into a list (what the dataset held before; 100K only). `rss_after_import_mb` is the process
before the work: importing any `omni_core.data` module imports torch (the package's collate), ~0.5 GB of it;
`peak_minus_import_mb` is the work's own. Written to benchmarks/results/data_index.json too.

Preparation runs twice, side by side: speech through the `flite` command (a process per utterance) and
through libflite in process (what `prepare` does when the library loads); both must write the same bytes.
Targets (issue 5): preparation <= 60 s on 2 cores; packing >= 95% non-pad tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def index_child(what: str, manifest: Path) -> dict:
    """One measurement in this (fresh) process: seconds and peak RSS."""
    if what == "index":
        from omni_core.data.index import ManifestIndex
        run = lambda: len(ManifestIndex.build(manifest))                       # noqa: E731
    elif what == "dataset":
        from omni_core.data.dataset import OmniDataset
        run = lambda: len(OmniDataset(manifest))                                # noqa: E731
    else:
        from omni_core.data.manifest import read_manifest
        run = lambda: len(read_manifest(manifest))                              # noqa: E731
    before = _rss_mb()
    t0 = time.perf_counter()
    n = run()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024            # KiB on Linux
    return {"records": n, "seconds": round(wall, 2), "peak_rss_mb": round(peak, 1),
            "rss_after_import_mb": round(before, 1), "peak_minus_import_mb": round(peak - before, 1)}


if __name__ == "__main__" and sys.argv[1:2] == ["--index-child"]:   # before torch: its RSS is not the index's
    print(json.dumps(index_child(sys.argv[2], Path(sys.argv[3]))))
    sys.exit(0)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from omni_core.config import load_config  # noqa: E402
from omni_core.data.collate import packing_report  # noqa: E402
from omni_core.data.prepare import checksums_path, prepare  # noqa: E402
from omni_core.data.sources import speech  # noqa: E402


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def bench_prepare(cfg, out: Path) -> dict:
    """Both flite paths, one after the other; the pool's workers fork with the main process's choice."""
    variants, library = {}, speech._flite_library
    for variant in ("flite_command", "flite_library"):
        speech._flite_library = (lambda: None) if variant == "flite_command" else library
        load = os.getloadavg()[0]
        cpu0, t0 = _cpu(), time.perf_counter()
        info = prepare(cfg, out / variant, workers=2)
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        variants[variant] = {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "load_average_before": round(load, 2)}
    speech._flite_library = library
    same = checksums_path(out / "flite_command").read_bytes() == checksums_path(out / "flite_library").read_bytes()
    wall = variants["flite_library"]["wall_seconds"]
    return {**variants, "library_vs_command_wall": round(wall / variants["flite_command"]["wall_seconds"], 2),
            "identical_files": same, "cores": len(os.sched_getaffinity(0)), "samples": info["samples"],
            "target_seconds": 60, "meets_target": wall <= 60,
            "note": "wall time on a shared machine counts other processes' load; cpu_seconds / 2 is the floor on 2 idle cores"}


def bench_packing(cfg, root: Path, batches: int, stage: str = "2_sft") -> dict:
    torch.set_num_threads(1)
    cfg.data.root = str(root)
    t0 = time.perf_counter()
    rep = packing_report(cfg, stage, batches)
    rep["seconds"] = round(time.perf_counter() - t0, 1)
    return {**rep, "target_non_pad_fraction": 0.95, "meets_target": rep["packing"]["non_pad_fraction"] >= 0.95}


INDEX_RESULT = Path(__file__).resolve().parent / "results" / "data_index.json"


def synthetic_manifest(path: Path, n: int) -> None:
    """n records of the SFT's shapes (text instructions, text LM, image questions, speech), ~200-450 bytes a
    line; every image / audio record names the same small file, so the dataset's `exists` check passes."""
    from omni_core.data.manifest import dumps, make_sample, media, text
    from omni_core.data.sources.media import write_png, write_wav
    write_png(path.parent / "media/a.png", np.zeros((32, 32, 3), np.uint8))
    write_wav(path.parent / "media/a.wav", np.zeros(1600, np.float32), 16000)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            k = i % 4
            if k == 0:
                s = make_sample(f"ti-{i}", "text_instruct", "train", "synthetic", "CC0-1.0",
                                [text(f"Repeat after me: the number {i} is written {i * 7919 % 100003}.")], f"{i}")
            elif k == 1:
                s = make_sample(f"lm-{i}", "text_lm", "train", "synthetic", "CC0-1.0", [],
                                "A paragraph of prose to model, " * 6 + str(i))
            elif k == 2:
                s = make_sample(f"vqa-{i}", "image_vqa", "train", "synthetic", "CC0-1.0",
                                [media("image", "media/a.png"), text("Which shape is left of the circle?")], "square")
            else:
                s = make_sample(f"asr-{i}", "asr", "train", "synthetic", "CC0-1.0",
                                [media("audio", "media/a.wav"), text("Transcribe the audio.")], f"seven {i}")
            f.write(dumps(s) + "\n")


def bench_index(sizes: list[int]) -> dict:
    out: dict = {"rss": "resource.getrusage(RUSAGE_SELF).ru_maxrss of a fresh subprocess per measurement",
                 "load_average_before": round(os.getloadavg()[0], 2), "cores": len(os.sched_getaffinity(0)),
                 "target": "1M lines index in seconds and well under 1 GB", "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"m{n}" / "train.jsonl"
            path.parent.mkdir()
            synthetic_manifest(path, n)
            row: dict = {"file_mb": round(path.stat().st_size / 2**20, 1)}
            for what in ("index", "dataset") + (("eager",) if n <= 100_000 else ()):
                res = subprocess.run([sys.executable, __file__, "--index-child", what, str(path)],
                                     capture_output=True, text=True, check=True)
                row[what] = json.loads(res.stdout)
            out["sizes"][str(n)] = row
    big = out["sizes"].get(str(max(sizes)), {}).get("index", {})
    out["meets_target"] = bool(big) and big["seconds"] < 10 and big["peak_rss_mb"] < 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=None, help="where to prepare (default: a temporary folder)")
    ap.add_argument("--reuse", default=None, help="skip preparation; measure packing on this prepared folder")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--index-only", action="store_true", help="only the manifest-index measurements")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = ap.parse_args()
    cfg = load_config(args.params)
    result: dict = {"profile": cfg.profile}
    if not args.index_only:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(args.reuse or args.out or tmp)
            if not args.reuse:
                result["prepare"] = bench_prepare(cfg, root)
                root = root / "flite_library"
            result["packing"] = bench_packing(cfg, root, args.batches)
    result["index"] = bench_index(args.sizes)
    INDEX_RESULT.parent.mkdir(parents=True, exist_ok=True)
    INDEX_RESULT.write_text(json.dumps(result["index"], indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
