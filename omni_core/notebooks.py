"""Notebook plumbing: keep the py:percent sources and the committed .ipynb in sync.

Reviewers read ``notebooks/*.py`` (jupytext py:percent); JupyterLab and papermill use the paired
``notebooks/*.ipynb``, committed without outputs (executed copies land in ``reports/``).

    python -m omni_core.notebooks sync    # write each .ipynb from its .py (outputs stripped)
    python -m omni_core.notebooks check   # fail if a pair drifted or a committed notebook has outputs
    python -m omni_core.notebooks run notebooks/02_alignment.ipynb reports/02_alignment_1a.ipynb -p stage 1a_image_caption

`run` is what every dvc.yaml stage calls: papermill (kernel python3, cwd the repo root), then the HTML
copy, in one process -- the `papermill` and `jupyter nbconvert` commands would each pay ~3-5 s of imports.
Its kernels draw no progress bars (`REPORT_ENV`); `noisy_outputs` lists what an executed report should not hold.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from unittest.mock import patch

from omni_core.config import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
# The environment `run` gives its kernels. A report keeps every redraw of a progress bar as an output of its
# own (hundreds of stderr boxes per training stage); tqdm takes its `disable` default from TQDM_DISABLE, and
# `omni_core.train.launch.train` turns its bars off on it too. Bars stay on in JupyterLab and the CLI.
REPORT_ENV = {"TQDM_DISABLE": "1"}


def _pairs(folder: Path = NOTEBOOKS) -> list[tuple[Path, Path]]:
    return [(py, py.with_suffix(".ipynb")) for py in sorted(folder.glob("[0-9][0-9]_*.py"))]


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def sync(folder: Path = NOTEBOOKS) -> list[Path]:
    """Write every notebook from its py:percent source, without outputs."""
    import jupytext

    written = []
    for py, ipynb in _pairs(folder):
        nb = jupytext.read(py)
        nb.metadata["kernelspec"] = KERNELSPEC
        nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
        for i, cell in enumerate(nb.cells):
            # ids fixed by file and position: random ids would change the bytes, and DVC would rerun the stage
            cell.id = hashlib.sha1(f"{py.stem}:{i}".encode()).hexdigest()[:8]
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        jupytext.write(nb, ipynb, fmt="ipynb")
        written.append(ipynb)
    return written


def check(folder: Path = NOTEBOOKS) -> list[str]:
    """Problems with the notebook pairs: missing twin, drifted cells, committed outputs, no parameters cell
    or one papermill cannot parse."""
    import jupytext

    problems = []
    for py, ipynb in _pairs(folder):
        if not ipynb.exists():
            problems.append(f"{ipynb}: missing; run `python -m omni_core.notebooks sync`")
            continue
        src, nb = jupytext.read(py), jupytext.read(ipynb)
        if _cells(src) != _cells(nb):
            problems.append(f"{ipynb}: cells differ from {py.name}; edit the .py and run "
                            "`python -m omni_core.notebooks sync` (or `jupytext --sync`)")
        if any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code"):
            problems.append(f"{ipynb}: committed with outputs; run `python -m omni_core.notebooks sync`")
        params_cells = [c for c in src.cells if "parameters" in c.metadata.get("tags", [])]
        if not params_cells:
            problems.append(f"{py}: no cell tagged `parameters` (papermill injects -p values after it)")
        for cell in params_cells:
            for n, line in enumerate(cell.source.splitlines(), 1):
                # papermill reads one `name = value  # help` per line and warns at every run on a second '='
                if not line.lstrip().startswith("#") and line.count("=") > 1:
                    problems.append(f"{py}: line {n} of the parameters cell has two '=' ({line.strip()!r}); "
                                    "papermill cannot parse it: reword its comment")
        if nb.metadata.get("kernelspec", {}).get("name") != "python3":
            problems.append(f"{ipynb}: kernelspec must be python3 (papermill -k python3 on any machine)")
    for ipynb in sorted(folder.glob("*.ipynb")):
        if not ipynb.with_suffix(".py").exists():
            problems.append(f"{ipynb}: has no py:percent twin {ipynb.with_suffix('.py').name}")
    return problems


def noisy_outputs(nb) -> list[str]:
    """What an executed notebook (a dict or nbformat node) should not show, one line per output: errors, and
    stderr streams (progress bars, warnings, log lines of a handler on stderr)."""
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"cell {i}: error {out.get('ename')}: {out.get('evalue')}")
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = out.get("text", "")
                text = "".join(text) if isinstance(text, list) else text     # .ipynb JSON may split it in lines
                found.append(f"cell {i}: stderr {text.strip()[:300]!r}")
    return found


def parameter_value(text: str):
    """A `-p` value typed as papermill's command line types it: None/True/False, int, float, else str."""
    if text in ("None", "True", "False"):
        return {"None": None, "True": True, "False": False}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run(notebook: Path, output: Path, parameters: dict | None = None, cwd: Path = REPO_ROOT) -> Path:
    """Execute ``notebook`` into ``output`` with papermill (kernel python3) and write ``output`` as HTML.

    The HTML is written even when a cell fails, so the error can be read without Jupyter; the failure
    is then raised again.
    """
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        # "immediate": once the last cell has run, the kernel is killed instead of asked to exit. A kernel
        # holding torch and transformers spends 2.5-3.5 s in interpreter teardown, every stage; its cells
        # have written and closed their files by then, and papermill has every output.
        with patch.dict(os.environ, REPORT_ENV):     # the kernel inherits it; the caller's is restored after
            papermill.execute_notebook(str(notebook), str(output), parameters=parameters or {}, kernel_name="python3",
                                       cwd=str(cwd), progress_bar=False, shutdown_kernel="immediate")
    finally:
        if output.exists():
            html, _ = HTMLExporter().from_notebook_node(nbformat.read(output, as_version=4))
            output.with_suffix(".html").write_text(html, encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m omni_core.notebooks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["sync", "check", "run"])
    ap.add_argument("paths", nargs="*", type=Path, metavar="IN OUT", help="run: the notebook and its executed copy")
    ap.add_argument("-p", dest="parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="run: a parameter for the notebook's `parameters` cell, as in papermill")
    args = ap.parse_args(argv)
    if args.command == "run":
        if len(args.paths) != 2:
            ap.error("run takes two paths: the notebook and where its executed copy goes")
        import logging

        from omni_core.import_speedups import skip_iri_grammar

        skip_iri_grammar()
        logging.basicConfig(level=logging.WARNING)
        run(*args.paths, {k: parameter_value(v) for k, v in args.parameters})
        return 0
    if args.command == "sync":
        for p in sync():
            print(f"wrote {p.relative_to(REPO_ROOT)}")
        return 0
    problems = check()
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
