"""Launch commands for notebooks (python / torchrun / deepspeed + hostfile), the log streaming runner,
and `--set` parsing of the CLI."""
import subprocess
import sys

import pytest

from omni_core.config import ConfigError, parse_overrides
from omni_core.train.launch import build_command, run, write_hostfile


def test_commands_for_each_launcher(tmp_path):
    one = build_command("1a_image_caption", nproc=1, sets=["stages.1a_image_caption.steps=3"])
    assert one[1:] == ["-m", "omni_core.train", "--stage", "1a_image_caption", "--params", "params.yaml",
                       "--set", "stages.1a_image_caption.steps=3"]
    tr = build_command("2_sft", nproc=4, nnodes=2, node_rank=1, master_addr="10.0.0.1")
    assert tr[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=4" in tr and "--node_rank=1" in tr
    assert tr[tr.index("-m", 3):][:2] == ["-m", "omni_core.train"]
    hosts = write_hostfile({"node1": 8, "node2": 8}, tmp_path / "hostfile")
    assert hosts.read_text() == "node1 slots=8\nnode2 slots=8\n"
    ds = build_command("2_sft", nproc=8, nnodes=2, hostfile=hosts, master_addr="node1")
    assert ds[1:3] == ["-m", "deepspeed.launcher.runner"] and f"--hostfile={hosts}" in ds
    assert ds[ds.index("--module") + 1] == "omni_core.train"
    with pytest.raises(ValueError, match="torchrun"):
        build_command("2_sft", nproc=2, launcher="python")


def test_run_streams_and_reports_failures(tmp_path, capsys):
    log = tmp_path / "train.log"
    run([sys.executable, "-c", "import sys; print('step 1'); sys.stderr.write('bar\\r')"], log_file=log)
    assert "step 1" in log.read_text() and "bar" in log.read_text()
    assert "step 1" in capsys.readouterr().out
    with pytest.raises(subprocess.CalledProcessError) as e:
        run([sys.executable, "-c", "raise SystemExit('boom: bad stage')"], echo=False)
    assert "boom: bad stage" in e.value.output


def test_set_overrides_parse_yaml_values():
    assert parse_overrides(["stages.2_sft.steps=10", "train.backend=deepspeed", "stages.1a_image_caption.lr.llm=1e-5"]) == {
        "stages": {"2_sft": {"steps": 10}, "1a_image_caption": {"lr": {"llm": "1e-5"}}},
        "train": {"backend": "deepspeed"}}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["stages.2_sft.steps"])


def test_train_runs_a_one_process_stage_in_this_process(tmp_path, capsys):
    """What notebooks 02/03 call: with `train.nproc: 1` no second interpreter starts; the summary comes back
    and the log lines reach the cell and `log_file`."""
    import yaml
    from train_fixtures import make_tiny_data, tiny_cfg

    from omni_core.train.launch import train

    cfg = tiny_cfg(tmp_path, make_tiny_data(tmp_path / "data", n_train=2, n_val=1,
                                                   tasks=("text_lm", "text_instruct")))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg.to_dict()))
    log = tmp_path / "logs/0_text/train.log"
    summary = train("0_text", params=params, log_file=log)
    assert summary["steps"] == 2 and (tmp_path / "checkpoints/0_text/model/model.safetensors").is_file()
    # the cell gets a few lines; the log file also keeps the whole summary
    out, logged = capsys.readouterr().out, log.read_text()
    assert "0_text finished: 2 steps in" in out and "val loss:" in out and "0_text finished: 2 steps" in logged
    assert '"supervised_tokens_per_s"' in logged and "supervised_tokens_per_s" not in out
    assert "Setting accelerator" not in out      # deepspeed's probe, imported by save_pretrained


def test_describe_summary_is_a_few_lines_with_the_headline_metrics():
    from omni_core.train.launch import describe_summary

    lm = {"stage": "0_text", "params": {"llm": {"total": 10, "trainable": 10}}, "world_size": 1, "backend": "torch",
          "val_loss_start": 7.7244, "train_loss": 1.97, "val_loss_end": 2.3042, "steps": 400, "wall_s": 103.06,
          "tokens_per_s": 4557.8, "supervised_tokens_per_s": 2344.5}
    assert describe_summary(lm) == "0_text finished: 400 steps in 1 min 43 s, 4,558 tokens/s\n  val loss: 7.724 -> 2.304"
    encoder = {"stage": "0_vision", "val_loss_start": 3.43, "val_accuracy_start": 8.6, "val_word_accuracy_start": 2.0,
               "train_loss": 0.3, "wall_s": 7.25, "val_loss_end": 0.51, "val_accuracy_end": 84.17,
               "val_word_accuracy_end": 74.75, "steps": 1000, "val_accuracy_chance": 10.0}
    assert describe_summary(encoder).splitlines() == [
        "0_vision finished: 1000 steps in 7.2 s", "  val loss: 3.430 -> 0.510",
        "  val accuracy: 8.6 % -> 84.2 % (chance 10.0 %)", "  val word accuracy: 2.0 % -> 74.8 %"]
    audio = {"stage": "1e_audio", "projector_ctc_val_wer_start": 162.09, "projector_ctc_val_wer_end": 13.74,
             "projector_ctc_loss_end": 0.14, "val_loss_start": 2.75, "val_loss_end": 1.61, "steps": 200, "wall_s": 3700.0}
    assert describe_summary(audio).splitlines() == [
        "1e_audio finished: 200 steps in 1 h 01 min", "  val loss: 2.750 -> 1.610",
        "  projector CTC val WER: 162.1 % -> 13.7 %"]
    skipped = {"stage": "0_text", "profile": "small", "skipped": True, "next_stage_starts_from": "models/converted"}
    assert describe_summary(skipped) == "0_text skipped: the next stage starts from models/converted"
