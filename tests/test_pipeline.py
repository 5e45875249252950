"""Both DVC pipelines (dvc.yaml, ablations/dvc.yaml) on the smoke profile, in a temporary copy of the repo.

Runs the real thing (dvc -> papermill -> notebooks -> omni_core), a handful of steps per stage, and
checks every out, metric and report exists and that no report shows stderr output or an error; then that
a second `dvc repro` has nothing to do, that an evaluation param reruns only evaluation and figures, that
the local remote restores the outputs, and that a `dvc repro` killed in the middle of a training stage
resumes it when rerun.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from omni_core.config import REPO_ROOT

# the module's fixture runs both pipelines: 10 min on a 2-core machine's slow day, over the suite's 600 s default
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def _sh(cmd: str, cwd: Path, timeout: int = 900) -> str:
    r = subprocess.run(cmd, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        src = REPO_ROOT / f
        if src.is_file() and not f.startswith(("data/prepared", "checkpoints", "models/", "reports/", "metrics/",
                                               "figures/", "logs/", "benchmarks/results")):
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / f)
    (repo / "dvc.lock").unlink(missing_ok=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ablations = yaml.safe_load((repo / "ablations/dvc.yaml").read_text())
    for var in ablations["vars"]:
        if "seeds" in var:
            var["seeds"] = [1]              # one extra draw checks the seeds arm's plumbing
    (repo / "ablations/dvc.yaml").write_text(yaml.safe_dump(ablations, sort_keys=False))
    _sh("git init -q && git add -A && git -c user.email=ci@x -c user.name=ci commit -qm smoke", repo)
    _sh("dvc repro", repo, timeout=1500)
    _sh("dvc repro ablations/dvc.yaml", repo, timeout=900)
    return repo


def test_every_out_metric_and_report_exists(smoke_repo):
    from dvc.repo import Repo

    with Repo(str(smoke_repo)) as repo:     # every dvc.yaml, foreach, vars and wdir resolved as dvc repro does
        missing = [f"{stage.addressing}: {out.def_path}" for stage in repo.index.stages for out in stage.outs
                   if not Path(out.fs_path).exists() and "small/dvc.yaml:" not in stage.addressing]
    assert not missing, missing
    assert (smoke_repo / "figures/ablation_staging.png").exists()
    # every ablation arm wrote its result where notebook 07 looks for it
    for arm in ("downsample/n2", "downsample/n4", "downsample/n8", "staging/joint", "staging/staged", "seeds/staged-seed1"):
        assert (smoke_repo / "metrics/ablations" / f"{arm}.json").exists(), arm
    assert list((smoke_repo / "reports").glob("*.html")), "no HTML reports"
    assert (smoke_repo / "data/prepared/train.jsonl").stat().st_size > 0


def test_small_pipeline_resolves_beside_the_tiny_one(smoke_repo):
    """small/dvc.yaml (the small profile's ~2 h recipe, too long for CI) resolves: its params exist, its
    stages chain from the converted weights to the timing, and none of its outs is an out of dvc.yaml."""
    dag = _sh("dvc dag --dot small/dvc.yaml", smoke_repo)
    edges = (("pretrained_weights", "prepare_data"), ("prepare_data", "train@0_vision"), ("train@1d_video", "train@1e_audio"),
             ("train@1f_omni_alignment", "train@2_sft"), ("train@2_sft", "evaluate"), ("evaluate", "timing"))
    for a, b in edges:
        assert f'"small/dvc.yaml:{a}" -> "small/dvc.yaml:{b}"' in dag, (a, b, dag[:2000])
    status = _sh("dvc status small/dvc.yaml", smoke_repo)     # every param it names exists in params.yaml
    assert "small/dvc.yaml:train@2_sft" in status and "up to date" in _sh("dvc status dvc.yaml", smoke_repo)
    overlay = smoke_repo / "configs/small.yaml"
    original = overlay.read_text()
    overlay.write_text(original + "# a change to the small profile\n")
    try:                                          # ... also when the small profile's overlay changes
        assert "up to date" in _sh("dvc status dvc.yaml", smoke_repo)
    finally:
        overlay.write_text(original)


def test_executed_reports_show_no_stderr_and_no_errors(smoke_repo):
    """Reports are for reading: no progress-bar redraws, warnings or stray log lines on stderr, no errors.
    Before the tests below rerun any stage."""
    import nbformat

    from omni_core.notebooks import noisy_outputs

    reports = sorted((smoke_repo / "reports").glob("*.ipynb"))
    assert len(reports) >= 10, reports
    noisy = {r.name: found for r in reports if (found := noisy_outputs(nbformat.read(r, as_version=4)))}
    assert not noisy, "\n".join(f"{name}: {line}" for name, lines in noisy.items() for line in lines[:5])


def _changed_stages(status: str) -> set[str]:
    """Stage names in `dvc status` output (the unindented lines)."""
    return {line.strip().rstrip(":") for line in status.splitlines() if line and not line.startswith(("\t", " "))}


def test_second_repro_is_a_no_op_and_eval_params_rerun_only_eval(smoke_repo):
    assert "up to date" in _sh("dvc repro", smoke_repo)
    assert "ablations/dvc.yaml" not in _sh("dvc repro --dry", smoke_repo)     # ablations stay out of the default
    params = yaml.safe_load((smoke_repo / "params.yaml").read_text())
    params["eval"]["max_new_tokens"] += 1
    (smoke_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _sh("dvc status", smoke_repo)
    changed = _changed_stages(status)
    assert "evaluate" in changed and not any(s.startswith(("train@", "prepare")) for s in changed), status
    # the audio projector's rate: only the stages from the first one that trains the projector on retrain
    with_eval_change = (smoke_repo / "params.yaml").read_text()
    params["model"]["audio"]["downsample"] = 2
    (smoke_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        changed = _changed_stages(_sh("dvc status", smoke_repo))
    finally:
        (smoke_repo / "params.yaml").write_text(with_eval_change)    # the tests below expect the eval change only
    assert {s for s in changed if s.startswith("train@")} == {"train@1e_audio", "train@1f_omni_alignment",
                                                               "train@2_sft"}, changed


def test_local_remote_push_and_pull_restore_outputs(smoke_repo, tmp_path):
    """The README's local-remote recipe: push the cache, lose it and the outputs, pull them back."""
    remote = tmp_path / "dvc-remote"
    _sh(f"dvc remote add -f -d local {remote} && dvc push -q dvc.yaml ablations/dvc.yaml", smoke_repo)
    ckpt = smoke_repo / "checkpoints/2_sft/model/model.safetensors"
    before = ckpt.read_bytes()
    shutil.rmtree(smoke_repo / ".dvc/cache")
    shutil.rmtree(smoke_repo / "checkpoints/2_sft/model")
    shutil.rmtree(smoke_repo / "data/prepared")
    _sh("dvc pull -q dvc.yaml ablations/dvc.yaml", smoke_repo)   # the small pipeline has not run here
    assert ckpt.read_bytes() == before
    assert (smoke_repo / "data/prepared/train.jsonl").stat().st_size > 0
    assert "up to date" in _sh("dvc status train@2_sft", smoke_repo)   # eval params were changed above


def _saved_steps(state: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in state.glob("step_*") if (m := re.fullmatch(r"step_(\d+)", p.name)))


def test_killed_repro_resumes_the_training_stage(smoke_repo):
    """The issue's kill test: `dvc repro` SIGKILLed (with its notebook kernel) mid-stage, then rerun,
    continues from the last saved state instead of step 0. Puts the smoke config back afterwards."""
    overlay = smoke_repo / "configs/smoke.yaml"
    original = overlay.read_text()
    line = next(x for x in original.splitlines() if x.strip().startswith("2_sft:"))
    steps = 60
    overlay.write_text(original.replace(line, f"  2_sft: {{steps: {steps}, batch_size: 4, save_every: 10}}"))
    state, log = smoke_repo / "checkpoints/2_sft/state", smoke_repo / "logs/2_sft/train.log"
    try:
        # dvc itself is the child (no shell), so wait() reaps it: DVC's lock file names its PID, and a zombie
        # left to an init that never reaps would still count as alive and block the rerun
        proc = subprocess.Popen(["dvc", "repro", "-s", "train@2_sft"], cwd=smoke_repo, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 300
        while not [s for s in _saved_steps(state) if 20 <= s < steps] and time.monotonic() < deadline:
            assert proc.poll() is None, "dvc repro ended before the test could kill it"
            time.sleep(0.05)
        # the kernel runs in its own session (jupyter_client), so kill the whole process tree, as an OOM kill would
        victims = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)
        killed_at = max(s for s in _saved_steps(state) if s < steps)
        assert killed_at >= 20 and steps not in _saved_steps(state)

        _sh("dvc repro -s train@2_sft", smoke_repo)
        resumed = re.findall(r"resuming 2_sft from \S+ \(step (\d+)\)", log.read_text())
        assert resumed and int(resumed[-1]) >= killed_at, log.read_text()[-3000:]
        assert _saved_steps(state)[-1] == steps
    finally:
        overlay.write_text(original)
        _sh("dvc repro -s train@2_sft", smoke_repo)     # back to the 2-step smoke stage (same weights as before)
