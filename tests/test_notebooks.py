"""Committed notebooks stay paired with their py:percent sources and carry no outputs."""
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

    (tmp_path / "02_orphan.ipynb").write_text(jupytext.writes(jupytext.reads("# %%\n1\n", fmt="py:percent"), fmt="ipynb"))
    assert any("02_orphan.ipynb: has no py:percent twin" in p for p in notebooks.check(tmp_path))
