"""A lazy index of a JSONL manifest: where each record's line starts, and the few fields sampling needs.

Indexing scans the file's bytes once and keeps, per record, its byte offset and size, its line number, its
task (an id into ``tasks``) and a rough token estimate, in numpy arrays (about 30 bytes a record); a record
is decoded only when it is read (``index.read(i)``, one ``os.pread`` + ``json.loads``). A 1M-line manifest
then indexes in seconds and tens of MB, where the decoded records would take GBs, and DataLoader worker
processes share the arrays instead of copying every dict that a refcount touched (``benchmarks/bench_data.py``).

The task comes from the bytes without decoding JSON when the line holds exactly one ``"task"`` string
token and it is a plain ``"task": "name"`` pair; otherwise (escapes, repeated keys, bad JSON) the line is
decoded, and a line that does not decode gets task id -1 (``UNKNOWN``), so whoever reads it reports it with
file:line. Line numbers count lines as Python's text mode does (``\\n``, ``\\r\\n`` and a lone ``\\r`` end
a line), so they match what ``manifest.iter_manifest`` reports.
"""
from __future__ import annotations

import json
import os
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np

from .manifest import ManifestError, Sample

UNKNOWN = -1          # task id of a line whose task is not known without decoding it (bad JSON, odd task value)
_TASK = re.compile(rb'"task"\s*:\s*"([^"\\]*)"')
_MEDIA_TOKENS = 32    # per media part, as `dataset.estimate_media_tokens` counts one without a processor


def _parse(raw: bytes) -> Sample | ManifestError:
    """The record of one line, or the reason it is not one (same wording as ``manifest.iter_manifest``)."""
    try:
        return json.loads(raw.decode("utf-8"))      # decode first: json.loads(bytes) would accept a BOM
    except UnicodeDecodeError as e:
        return ManifestError(f"not valid UTF-8 (byte {e.start + 1}); save the manifest as UTF-8")
    except json.JSONDecodeError as e:
        return ManifestError(f"not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON object")


def _task_of(body: bytes) -> str | None:
    """The record's task from its bytes; None when only decoding it can tell (or it has no usable task)."""
    if body.count(b'"task"') == 1:                   # inside a JSON string a quote is escaped: \"task\" never matches
        m = _TASK.search(body)
        if m:
            return m.group(1).decode("utf-8", "replace")
    rec = _parse(body)
    task = rec.get("task") if isinstance(rec, dict) else None
    return task if isinstance(task, str) else None


def _blank(body: bytes) -> bool:
    """A line ``iter_manifest`` skips (``str.strip`` is empty: it also strips Unicode spaces such as NBSP)."""
    s = body.strip()
    return not s or (s[:1] != b"{" and not body.decode("utf-8", "replace").strip())


class ManifestIndex:
    """Byte offsets, sizes, line numbers, task ids and token estimates of a manifest's non-blank lines."""

    def __init__(self, path: str | Path, offsets: np.ndarray, sizes: np.ndarray, lines: np.ndarray,
                 task_ids: np.ndarray, tasks: tuple[str, ...], approx_tokens: np.ndarray, stamp: tuple[int, int]):
        self.path = Path(path)
        self.offsets, self.sizes, self.lines, self.task_ids = offsets, sizes, lines, task_ids
        self.tasks, self.approx_tokens, self.stamp = tasks, approx_tokens, stamp
        self._fd: int | None = None
        self._fd_pid = -1

    @classmethod
    def build(cls, path: str | Path) -> ManifestIndex:
        path = Path(path)
        offsets, sizes, lines, task_ids, approx = array("q"), array("i"), array("i"), array("h"), array("i")
        names: dict[str, int] = {}

        def add(start: int, body: bytes, line: int) -> None:
            if _blank(body):
                return
            task = _task_of(body)
            offsets.append(start)
            sizes.append(len(body))
            lines.append(line)
            task_ids.append(UNKNOWN if task is None else names.setdefault(task, len(names)))
            approx.append(len(body) // 4 + _MEDIA_TOKENS * body.count(b'"path"'))

        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            offset = line = 0
            for raw in f:
                start, offset = offset, offset + len(raw)
                body = raw[:-1] if raw.endswith(b"\n") else raw
                if body.endswith(b"\r"):
                    body = body[:-1]
                if b"\r" in body:            # a lone CR ends a line too in text mode (universal newlines)
                    for piece in body.split(b"\r"):
                        line += 1
                        add(start, piece, line)
                        start += len(piece) + 1
                else:
                    line += 1
                    add(start, body, line)
        arrays = [np.frombuffer(a, dt) for a, dt in ((offsets, np.int64), (sizes, np.int32), (lines, np.int32),
                                                     (task_ids, np.int16), (approx, np.int32))]
        return cls(path, *arrays[:4], tuple(names), arrays[4], (st.st_size, st.st_mtime_ns))

    def __len__(self) -> int:
        return len(self.offsets)

    def task(self, i: int) -> str | None:
        """Record i's task as indexed (None: only decoding the line can tell)."""
        t = int(self.task_ids[i])
        return None if t == UNKNOWN else self.tasks[t]

    def rows(self, tasks: Iterable[str] | None = None, unknown: bool = True) -> np.ndarray:
        """Indices of the records of ``tasks`` (all when None), and, with ``unknown``, of those whose task is
        only known once decoded."""
        if tasks is None:
            return np.arange(len(self))
        wanted = set(tasks)
        ids = [k for k, t in enumerate(self.tasks) if t in wanted] + ([UNKNOWN] if unknown else [])
        return np.flatnonzero(np.isin(self.task_ids, ids))

    # ------------------------------------------------------------------------------------ reading
    def _file(self) -> int:
        """A descriptor of this process's own (``pread`` moves no shared offset, so forked workers are safe);
        the file must still be the one indexed."""
        if self._fd_pid != os.getpid():
            fd = os.open(self.path, os.O_RDONLY)
            st = os.fstat(fd)
            if (st.st_size, st.st_mtime_ns) != self.stamp:
                os.close(fd)
                raise ManifestError(f"{self.path} changed after it was indexed; build the dataset again "
                                    f"(was the data prepared again while training?)")
            self._fd, self._fd_pid = fd, os.getpid()
        assert self._fd is not None
        return self._fd

    def raw(self, i: int) -> bytes:
        return os.pread(self._file(), int(self.sizes[i]), int(self.offsets[i]))

    def parse(self, i: int) -> Sample | ManifestError:
        """Record i, or the reason it is not one (without file:line: ``Problem`` adds them)."""
        return _parse(self.raw(i))

    def read(self, i: int) -> Sample:
        """Record i; a line that is not a JSON record raises ManifestError naming file:line."""
        rec = self.parse(i)
        if isinstance(rec, ManifestError):
            raise ManifestError(f"{self.path}:{int(self.lines[i])}: {rec}")
        return rec

    def __getstate__(self) -> dict:            # a pickled copy (spawned worker) opens its own descriptor
        return {**self.__dict__, "_fd": None, "_fd_pid": -1}

    def __del__(self) -> None:
        if self._fd is not None and self._fd_pid == os.getpid():
            os.close(self._fd)


class LazyRecords(Sequence[Sample]):
    """The records at ``rows`` of an index, decoded on each access (nothing is cached: a record is small to
    decode and a list of them is what this avoids)."""

    def __init__(self, index: ManifestIndex, rows: np.ndarray):
        self.index, self.rows = index, rows

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> Sample: ...
    @overload
    def __getitem__(self, i: slice) -> list[Sample]: ...

    def __getitem__(self, i: int | slice) -> Sample | list[Sample]:
        if isinstance(i, slice):
            return [self.index.read(int(r)) for r in self.rows[i]]
        return self.index.read(int(self.rows[i]))

    def __iter__(self) -> Iterator[Sample]:
        return (self.index.read(int(r)) for r in self.rows)
