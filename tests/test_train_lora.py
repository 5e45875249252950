"""LoRA on the LLM (train.lora_rank > 0): only the adapters train, and the exported checkpoint is a
plain model with the adapters merged, computing what the adapted model computes."""
import torch
from train_fixtures import make_tiny_data, tiny_cfg

from omni_core.model import OmniForConditionalGeneration
from omni_core.train.loop import train_stage
from omni_core.train.model_init import init_model


def test_lora_trains_adapters_and_exports_merged(tmp_path):
    data = make_tiny_data(tmp_path / "data", n_train=4, n_val=2, tasks=("text_lm", "text_instruct"))
    cfg = tiny_cfg(tmp_path, data, steps=2, train={"lora_rank": 4}, stages={"0_text": {"lr": {"llm": 1e-2}}})
    torch.manual_seed(cfg.train.seed)
    before, processor = init_model(cfg, cfg.stage("0_text"), dtype=torch.float32)
    base = {n: p.detach().clone() for n, p in before.named_parameters() if "lora_" not in n}
    res = train_stage(cfg, "0_text", progress=False)
    model = res["model"].eval()
    params = dict(model.named_parameters())
    assert all(torch.equal(base[n], params[n]) for n in base), "a non-LoRA weight moved"
    assert any(float(p.detach().abs().sum()) > 0 for n, p in params.items() if "lora_B" in n), "adapters did not train"

    exported = OmniForConditionalGeneration.from_pretrained(tmp_path / "checkpoints" / "0_text" / "model").eval()
    assert not any("lora" in n for n, _ in exported.named_parameters())
    batch = processor([{"role": "user", "content": [{"type": "text", "text": "What is it?"}]},
                       {"role": "assistant", "content": [{"type": "text", "text": "all that glitters"}]}])
    batch = {k: v[None] for k, v in batch.items()}
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, exported(**batch).logits, atol=1e-5)
