"""Both DVC pipelines (dvc.yaml, ablations/dvc.yaml) on the smoke profile, in a temporary copy of the repo.

Runs the real thing (dvc -> papermill -> notebooks -> omni_core), a handful of steps per stage, and
checks every out, metric and report exists; then that a second `dvc repro` has nothing to do and that
an evaluation param reruns only evaluation and figures.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from omni_core.config import REPO_ROOT

# the module's fixture runs both pipelines: 10 min on a 2-core machine's slow day, over the suite's 600 s default
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _sh(cmd: str, cwd: Path, timeout: int = 900) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    r = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
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
    missing = []
    for dvcfile in ("dvc.yaml", "ablations/dvc.yaml"):
        for name, st in yaml.safe_load((smoke_repo / dvcfile).read_text())["stages"].items():
            items = st["foreach"] if "foreach" in st else [None]
            if isinstance(items, str):              # foreach: ${var}, from the file's vars
                name_of = items.strip("${}")
                items = next(v[name_of] for v in yaml.safe_load((smoke_repo / dvcfile).read_text())["vars"]
                             if isinstance(v, dict) and name_of in v)
            body = st.get("do", st)
            for item in items:
                for out in body.get("outs", []) + body.get("metrics", []) + body.get("plots", []):
                    path = next(iter(out)) if isinstance(out, dict) else out
                    path = path.replace("${item}", str(item))
                    if not (smoke_repo / path).exists():
                        missing.append(f"{dvcfile}:{name}: {path}")
    assert not missing, missing
    assert (smoke_repo / "figures/ablation_staging.png").exists()
    # every ablation arm wrote its result where the figures look for it
    for arm in ("downsample/n2", "downsample/n4", "downsample/n8", "staging/joint", "staging/staged", "seeds/staged-seed1"):
        assert (smoke_repo / "ablations" / arm / "result.json").exists(), arm
    assert list((smoke_repo / "reports").glob("*.html")), "no HTML reports"
    assert (smoke_repo / "data/prepared/train.jsonl").stat().st_size > 0


def test_second_repro_is_a_no_op_and_eval_params_rerun_only_eval(smoke_repo):
    assert "up to date" in _sh("dvc repro", smoke_repo)
    assert "ablations/dvc.yaml" not in _sh("dvc repro --dry", smoke_repo)     # ablations stay out of the default
    params = yaml.safe_load((smoke_repo / "params.yaml").read_text())
    params["eval"]["max_new_tokens"] += 1
    (smoke_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _sh("dvc status", smoke_repo)
    changed = {line.strip().rstrip(":") for line in status.splitlines() if line and not line.startswith(("\t", " "))}
    assert "evaluate" in changed and not any(s.startswith(("train_", "prepare")) for s in changed), status


def test_local_remote_push_and_pull_restore_outputs(smoke_repo, tmp_path):
    """The README's local-remote recipe: push the cache, lose it and the outputs, pull them back."""
    remote = tmp_path / "dvc-remote"
    _sh(f"dvc remote add -f -d local {remote} && dvc push -q", smoke_repo)
    ckpt = smoke_repo / "checkpoints/2_sft/model/model.safetensors"
    before = ckpt.read_bytes()
    shutil.rmtree(smoke_repo / ".dvc/cache")
    shutil.rmtree(smoke_repo / "checkpoints/2_sft/model")
    shutil.rmtree(smoke_repo / "data/prepared")
    _sh("dvc pull -q", smoke_repo)
    assert ckpt.read_bytes() == before
    assert (smoke_repo / "data/prepared/train.jsonl").stat().st_size > 0
    assert "up to date" in _sh("dvc status train_2_sft", smoke_repo)   # eval params were changed above
