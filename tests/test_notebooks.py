"""Committed notebooks stay paired with their py:percent sources and carry no outputs; executed ones show
no progress bars, warnings or errors."""
import os
import time

import jupytext
import nbformat

from omni_core import notebooks


def test_repo_notebooks_are_paired_and_clean():
    assert notebooks._pairs(), "no notebooks found"
    assert notebooks.check() == []


def test_check_catches_drift_outputs_and_missing_parameters(tmp_path):
    (tmp_path / "01_demo.py").write_text(
        "# %% tags=[\"parameters\"]\nx = 1\n\n# %%\nprint(x)\n")
    notebooks.sync(tmp_path)
    assert notebooks.check(tmp_path) == []

    nb = nbformat.read(tmp_path / "01_demo.ipynb", 4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    nbformat.write(nb, tmp_path / "01_demo.ipynb")
    assert any("committed with outputs" in p for p in notebooks.check(tmp_path))

    notebooks.sync(tmp_path)
    (tmp_path / "01_demo.py").write_text("# %%\nx = 2\n\n# %%\nprint(x)\n")
    problems = notebooks.check(tmp_path)
    assert any("cells differ" in p for p in problems) and any("parameters" in p for p in problems)

    # a second '=' in a parameter's comment: papermill cannot parse the line (and warns at every run)
    (tmp_path / "01_demo.py").write_text("# %% tags=[\"parameters\"]\nx = 1   # 1 = default\n\n# %%\nprint(x)\n")
    notebooks.sync(tmp_path)
    assert [p for p in notebooks.check(tmp_path) if "line 1 of the parameters cell has two '='" in p]

    (tmp_path / "02_orphan.ipynb").write_text(jupytext.writes(jupytext.reads("# %%\n1\n", fmt="py:percent"), fmt="ipynb"))
    assert any("02_orphan.ipynb: has no py:percent twin" in p for p in notebooks.check(tmp_path))


def test_run_injects_parameters_and_writes_html_even_when_a_cell_fails(tmp_path):
    import papermill
    import pytest

    (tmp_path / "01_demo.py").write_text(
        "# %% tags=[\"parameters\"]\nx = 1\nname = 'a'\n\n# %%\nassert x != 0, 'x must not be 0'\nprint(f'x={x!r} name={name!r}')\n"
        "import os\nwith open('written.txt', 'w') as f:\n    f.write('z' * 100_000)\nprint(f'pid={os.getpid()}')\n"
        "from tqdm import tqdm\nfor _ in tqdm(range(3), desc='bar'):\n    pass\n")
    notebooks.sync(tmp_path)
    env_before = os.environ.get("TQDM_DISABLE")
    out = notebooks.run(tmp_path / "01_demo.ipynb", tmp_path / "reports" / "01_demo.ipynb",
                        {"x": notebooks.parameter_value("7"), "name": notebooks.parameter_value("1e_audio")},
                        cwd=tmp_path)
    printed = "".join(o.get("text", "") for c in nbformat.read(out, 4).cells for o in c.get("outputs", []))
    assert "x=7 name='1e_audio'" in printed
    # the kernel drew no progress bar (a report would keep each redraw); this process's environment is as it was
    assert notebooks.noisy_outputs(nbformat.read(out, 4)) == []
    assert os.environ.get("TQDM_DISABLE") == env_before
    assert "x=7" in out.with_suffix(".html").read_text()
    # the kernel is killed after its last cell (no interpreter teardown): what the cells wrote is all there
    assert (tmp_path / "written.txt").read_text() == "z" * 100_000
    pid = int(printed.split("pid=")[1].split()[0])
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)

    with pytest.raises(papermill.PapermillExecutionError, match="x must not be 0"):
        notebooks.run(tmp_path / "01_demo.ipynb", tmp_path / "failed.ipynb", {"x": 0}, cwd=tmp_path)
    assert "x must not be 0" in (tmp_path / "failed.html").read_text()
    assert [notebooks.parameter_value(v) for v in ("None", "True", "3", "0.5", "0_text")] == [None, True, 3, 0.5, "0_text"]


def test_noisy_outputs_lists_stderr_streams_and_errors():
    def code(*outputs):
        return {"cell_type": "code", "source": "", "outputs": list(outputs)}

    clean = [{"cell_type": "markdown", "source": "# title"},
             code({"output_type": "stream", "name": "stdout", "text": "0_text finished: 2 steps\n"},
                  {"output_type": "display_data", "data": {"text/plain": "<Figure>"}, "metadata": {}})]
    assert notebooks.noisy_outputs({"cells": clean}) == []
    noisy = clean + [code({"output_type": "stream", "name": "stderr", "text": ["0_text:  50%|", "#####     | 1/2\n"]}),
                     code({"output_type": "error", "ename": "ValueError", "evalue": "boom", "traceback": []})]
    assert notebooks.noisy_outputs({"cells": noisy}) == ["cell 2: stderr '0_text:  50%|#####     | 1/2'",
                                                        "cell 3: error ValueError: boom"]
    # an nbformat node reads the same as the JSON dict
    assert notebooks.noisy_outputs(nbformat.from_dict({"cells": noisy})) == notebooks.noisy_outputs({"cells": noisy})


def test_ablations_notebook_draws_the_committed_results_without_the_ablation_pipeline(tmp_path):
    """Notebook 07 on a fresh clone: only metrics/ablations/ (committed) exists, no ablations/ checkpoints, and
    it draws every figure from those results (figures go to a temporary folder, not the committed ones)."""
    import yaml

    from omni_core.config import REPO_ROOT

    results = REPO_ROOT / "metrics/ablations"
    assert sorted(p.name for p in results.iterdir()) == ["downsample", "seeds", "staging"], "commit the ablation results"
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["eval"]["figures_dir"] = str(tmp_path / "figures")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = notebooks.run(REPO_ROOT / "notebooks/07_ablations.ipynb", tmp_path / "07.ipynb",
                        {"params": str(tmp_path / "params.yaml"), "results_dir": str(results)})
    assert notebooks.noisy_outputs(nbformat.read(out, 4)) == []
    drawn = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert drawn == ["ablation_downsample.png", "ablation_seeds.png", "ablation_staging.png"], drawn
