"""The tiny omni model: splicing, gradients per modality, packing, loss masking, save/load, generation."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, DynamicCache

from omni_core.config import MODULES, load_config
from omni_core.model import OmniForConditionalGeneration, build_model, train_tokenizer
from omni_core.model.audio import ConvGMLP
from omni_core.model.configuration import PROJECT_KEYS, OmniConfig, omni_config_fields, project_config_values
from omni_core.model.labels import IGNORE_INDEX
from omni_core.model.omni import omni_config
from omni_core.model.token_counts import num_patches, tokens_per_tile
from omni_core.processing import OmniProcessor

CORPUS = ["A handwritten digit seven.", "Describe the image.", "What is said in the audio?",
          "The red square is left of the blue circle.", "Transcribe the speech.", "digit moves left and right",
          "hello world, the quick brown fox jumps over the lazy dog"] * 4

TOKEN_KEYS = ("input_ids", "attention_mask", "labels")
MEDIA_CAT = ("pixel_values", "video_values", "audio_features", "audio_window_counts", "audio_token_counts")


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def processor(cfg):
    return OmniProcessor(train_tokenizer(CORPUS, 400), cfg.model)


@pytest.fixture(scope="module")
def model(cfg, processor):
    torch.manual_seed(0)
    return build_model(cfg, processor.tokenizer)


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _wav(seconds, seed=0):
    return {"type": "audio", "array": np.random.default_rng(seed).normal(0, 0.1, int(16000 * seconds)).astype(np.float32),
            "sampling_rate": 16000}


SAMPLES = {
    "text": [{"type": "text", "text": "hello world"}],
    "image": [{"type": "image", "image": _rgb(32, 32)}, {"type": "text", "text": "Describe the image."}],
    "multi_tile": [{"type": "image", "image": _rgb(64, 64, 1)}, {"type": "text", "text": "Describe the image."}],
    "video": [{"type": "video", "frames": [_rgb(32, 32, i) for i in range(3)]}, {"type": "text", "text": "digit moves"}],
    "audio": [_wav(1.3), {"type": "text", "text": "Transcribe the speech."}],
    "image_audio": [{"type": "image", "image": _rgb(32, 32, 2)}, _wav(0.7, 1)],
}
EXPECTED_GRADS = {
    "text": {"llm"},
    "image": {"vision_encoder", "vision_projector", "llm"},
    "multi_tile": {"vision_encoder", "vision_projector", "llm"},
    "video": {"vision_encoder", "video_projector", "llm"},
    "audio": {"audio_encoder", "audio_projector", "llm"},
    "image_audio": {"vision_encoder", "vision_projector", "audio_encoder", "audio_projector", "llm"},
}


def _sample(processor, name, answer="A handwritten digit seven."):
    return processor([{"role": "user", "content": SAMPLES[name]},
                      {"role": "assistant", "content": [{"type": "text", "text": answer}]}])


def _pack(samples, labels=False):
    """All samples in one packed row (position_ids restart at each sample, no attention_mask)."""
    keys = ("input_ids", "labels") if labels else ("input_ids",)
    packed = {k: torch.cat([s[k] for s in samples])[None] for k in keys}
    packed["position_ids"] = torch.cat([torch.arange(len(s["input_ids"])) for s in samples])[None]
    for k in MEDIA_CAT:
        parts = [s[k] for s in samples if k in s]
        if parts:
            packed[k] = torch.cat(parts)
    return packed


def _batch(processor, samples):
    """Right-padded batch; media keys concatenated in sample order (the collator's contract)."""
    longest = max(len(s["input_ids"]) for s in samples)
    pad = {"input_ids": processor.tokenizer.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    out = {k: torch.stack([torch.nn.functional.pad(s[k], (0, longest - len(s[k])), value=pad[k]) for s in samples])
           for k in TOKEN_KEYS}
    for k in MEDIA_CAT:
        parts = [s[k] for s in samples if k in s]
        if parts:
            out[k] = torch.cat(parts)
    return out


def _grad_sums(model):
    """Per module group: None if no parameter got a .grad, else the total |grad|."""
    sums = {}
    for name, module in model.module_groups().items():
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        sums[name] = None if not grads else float(sum(g.abs().sum() for g in grads))
    return sums


def test_building_the_model_does_not_import_scikit_learn():
    """transformers' generation code imports scikit-learn (0.8 s a process) for assisted decoding only;
    omni_core.model hides it from the transformers modules imported after it, while transformers' own
    availability check (import_utils) still finds it."""
    code = ("import sys; import omni_core.model.omni; from transformers.utils import import_utils; "
            "print('sklearn' in sys.modules, import_utils.is_sklearn_available())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_project_keys_round_trip_through_a_saved_omni_config(processor, tmp_path):
    """Each OmniConfig field a run's config sets comes from its project key (model.vision.pool -> vision_pool, ...)
    and reads back to the same key and value from the checkpoint's config.json."""
    over = {"model": {"vision": {"pool": 3, "video_pool": 4, "pool_type": "bilinear", "max_tiles": 6, "video_max_tiles": 3},
                      "audio": {"downsample": 8, "crop_to_clip": True}, "trust_remote_code": True}}
    cfg = load_config(overrides=over)
    fields = omni_config_fields(cfg.model)
    assert set(fields) == set(PROJECT_KEYS)
    default = OmniConfig()
    assert all(getattr(default, f) != v for f, v in fields.items())    # every value differs from the default
    omni_config(cfg.model, processor.tokenizer).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {f: saved[f] for f in PROJECT_KEYS} == fields
    back = project_config_values(OmniConfig.from_pretrained(tmp_path))
    assert back == over and load_config(overrides=back).model == cfg.model


def test_module_groups_are_the_config_names(model):
    groups = model.module_groups()
    assert tuple(groups) == MODULES
    assert sum(p.numel() for g in groups.values() for p in g.parameters()) == sum(p.numel() for p in model.parameters())


def test_token_counts_come_from_the_modules(model, cfg):
    v = cfg.model.vision
    patches = num_patches(v.image_size, v.patch_size)
    with torch.no_grad():
        feats = model.get_image_features(torch.zeros(3, 3, v.image_size, v.image_size))
        video = model.get_video_features(torch.zeros(2, 3, v.image_size, v.image_size))
    assert feats.shape[0] == 3 * tokens_per_tile(v.image_size, v.patch_size, v.pool) == 3 * (patches // 4)
    assert video.shape[0] == 2 * tokens_per_tile(v.image_size, v.patch_size, v.video_pool) == 2 * (patches // 16)
    for n in (2, 4, 8):                                     # the paper's ablation: 25 / 12.5 / 6.25 tokens per second
        proj = ConvGMLP(16, 24, downsample=n)
        for frames in (n, n + 1, 150, 1500):
            assert proj(torch.zeros(1, frames, 16)).shape == (1, proj.num_output_tokens(frames), 24)
            assert proj.num_output_tokens(frames) == -(-frames // n)
        assert proj.num_output_tokens(1500) / 30 == pytest.approx(50 / n, abs=0.02)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_forward_backward_reaches_exactly_the_expected_modules(model, processor, name):
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(**_batch(processor, [_sample(processor, name)]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    sums = _grad_sums(model)
    for group, total in sums.items():
        assert total is not None, f"{group} got no gradient at all (the dummy pass must reach it): {sums}"
        if group in EXPECTED_GRADS[name]:
            assert total > 0, f"{name}: {group} should learn: {sums}"
        else:
            assert total == 0, f"{name}: {group} must get exactly zero gradient: {sums}"


def test_mixed_batch_of_all_modalities(model, processor):
    model.train()
    model.zero_grad(set_to_none=True)
    samples = [_sample(processor, n) for n in ("text", "multi_tile", "video", "audio", "image_audio")]
    batch = _batch(processor, samples)
    assert batch["audio_token_counts"].tolist() == [s["audio_token_counts"].item() for s in samples if "audio_features" in s]
    out = model(**batch)
    n_supervised = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert out.logits.shape == (n_supervised, model.config.text_config.vocab_size)   # logits only where labels are
    out.loss.backward()
    assert all(total and total > 0 for total in _grad_sums(model).values())


def test_mixed_batch_loss_equals_per_sample_losses(model, processor):
    """Batching must not leak between rows: the batch loss is the token-weighted mean of single-sample losses."""
    model.eval()
    samples = [_sample(processor, n, answer=a) for n, a in (("image", "seven"), ("audio", "the quick brown fox"),
                                                            ("text", "hello"))]
    with torch.no_grad():
        batch_loss = model(**_batch(processor, samples)).loss
        losses, counts = [], []
        for s in samples:
            losses.append(model(**_batch(processor, [s])).loss)
            counts.append(int((s["labels"][1:] != IGNORE_INDEX).sum()))
    expected = sum(loss * c for loss, c in zip(losses, counts)) / sum(counts)
    torch.testing.assert_close(batch_loss, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("weighting", ["sample", "sqrt"])
def test_loss_weighting_balances_short_and_long_answers_in_padded_and_packed_batches(model, processor, weighting):
    """``sample``: the mean of per-sample mean losses; ``sqrt``: tokens weighted 1/sqrt(answer length).
    The same whether the samples are padded rows or packed into one row."""
    model.eval()
    samples = [_sample(processor, n, answer=a) for n, a in (("image", "seven"), ("audio", "the quick brown fox"),
                                                            ("text", "hello world, the quick brown fox"))]
    packed = _pack(samples, labels=True)
    with torch.no_grad():
        means, counts = [], []
        for s in samples:
            means.append(model(**_batch(processor, [s])).loss)
            counts.append(int((s["labels"][1:] != IGNORE_INDEX).sum()))
        padded = model(**_batch(processor, samples), loss_weighting=weighting).loss
        in_one_row = model(**packed, loss_weighting=weighting).loss
    w = [1.0 if weighting == "sample" else c ** 0.5 for c in counts]     # sum of a sample's weights
    expected = sum(m * wi for m, wi in zip(means, w)) / sum(w)
    assert len(set(counts)) == 3
    torch.testing.assert_close(padded, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(in_one_row, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="loss_weighting"):
        model(**_batch(processor, samples), loss_weighting="mean")


def test_packed_forward_equals_unpacked(model, processor):
    model.eval()
    samples = [_sample(processor, n) for n in ("image_audio", "text", "video")]
    packed = _pack(samples)
    with torch.no_grad():
        logits = model(**packed).logits[0]
        start = 0
        for s in samples:
            alone = model(**{k: (v[None] if k in TOKEN_KEYS else v) for k, v in s.items() if k != "labels"}).logits[0]
            torch.testing.assert_close(logits[start:start + len(alone)], alone, atol=1e-5, rtol=0)
            start += len(alone)
        # and the attention really is block-causal: without position restarts the second sample changes
        causal = model(**{**packed, "position_ids": torch.arange(start)[None]}).logits[0]
        assert (causal[len(samples[0]["input_ids"]):] - logits[len(samples[0]["input_ids"]):]).abs().max() > 1e-3


def test_embed_inputs_chunked_prefill_matches_one_pass(model, processor):
    """The streaming path: embed chunks separately and prefill them into one KV cache."""
    model.eval()
    s = _sample(processor, "image_audio")
    ids = s["input_ids"][None]
    audio_start = int((ids[0] == model.config.audio_start_token_id).nonzero()[0])
    with torch.no_grad():
        full = model(input_ids=ids, pixel_values=s["pixel_values"], audio_features=s["audio_features"],
                     audio_window_counts=s["audio_window_counts"], audio_token_counts=s["audio_token_counts"]).logits
        cache = DynamicCache(config=model.config.text_config)
        first = model.embed_inputs(ids[:, :audio_start], pixel_values=s["pixel_values"])
        second = model.embed_inputs(ids[:, audio_start:], audio_features=s["audio_features"],
                                    audio_window_counts=s["audio_window_counts"],
                                    audio_token_counts=s["audio_token_counts"])
        a = model(inputs_embeds=first, past_key_values=cache, use_cache=True).logits
        b = model(inputs_embeds=second, past_key_values=cache, use_cache=True).logits
    torch.testing.assert_close(torch.cat([a, b], dim=1), full, atol=1e-5, rtol=1e-5)


def test_pad_count_mismatch_and_missing_media_are_clear_errors(model, processor):
    model.eval()
    s = _sample(processor, "image")
    with pytest.raises(ValueError, match=r"<\|image_pad\|> tokens in input_ids but pixel_values"):
        model(input_ids=s["input_ids"][None], pixel_values=torch.cat([s["pixel_values"]] * 2))
    with pytest.raises(ValueError, match="no pixel_values was given"):
        model(input_ids=s["input_ids"][None])
    a = _sample(processor, "audio")
    with pytest.raises(ValueError, match="audio_window_counts"):
        model(input_ids=a["input_ids"][None], audio_features=a["audio_features"],
              audio_window_counts=torch.tensor([2]), audio_token_counts=a["audio_token_counts"])


def test_all_labels_masked_is_an_error(model, processor):
    s = _sample(processor, "text")
    with pytest.raises(ValueError, match="no supervised token"):
        model(input_ids=s["input_ids"][None], labels=torch.full_like(s["input_ids"], IGNORE_INDEX)[None])


def test_loss_only_counts_supervised_positions(model, processor):
    """Changing a token that is never a target (user text) moves the loss only through context, not as a target."""
    model.eval()
    s = _sample(processor, "text")
    ids, labels = s["input_ids"][None], s["labels"][None]
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
        logits = model(input_ids=ids).logits[0, :-1]
    targets = labels[0, 1:]
    keep = targets != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, manual, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip_is_exact(model, processor, tmp_path):
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    s = _sample(processor, "image_audio")
    inputs = {k: (v[None] if k in TOKEN_KEYS else v) for k, v in s.items() if k != "labels"}
    with torch.no_grad():
        before = model(**inputs).logits
        for loader in (OmniForConditionalGeneration, AutoModelForCausalLM, AutoModel):
            loaded = loader.from_pretrained(tmp_path).eval()
            assert isinstance(loaded, OmniForConditionalGeneration)
            assert torch.equal(loaded(**inputs).logits, before)
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_generate_uses_the_kv_cache_and_media_only_at_prefill(model, processor):
    model.eval()
    s = processor([{"role": "user", "content": SAMPLES["image_audio"]}], add_generation_prompt=True)
    torch.manual_seed(0)
    with_cache = model.generate(**s, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    without = model.generate(**s, max_new_tokens=6, do_sample=False, min_new_tokens=6, use_cache=False)
    assert with_cache.shape == (1, len(s["input_ids"]) + 6)
    assert torch.equal(with_cache, without)
    media = {k: v for k, v in s.items() if k not in TOKEN_KEYS}
    embeds = model.embed_inputs(s["input_ids"][None], **media)            # the streaming path: prefill embeddings
    from_embeds = model.generate(inputs_embeds=embeds, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert torch.equal(from_embeds[0], with_cache[0, len(s["input_ids"]):])


def test_generate_on_a_right_padded_batch_matches_single_prompts(model, processor):
    model.eval()
    prompts = [processor([{"role": "user", "content": SAMPLES[n]}], add_generation_prompt=True) for n in ("text", "image")]
    batch = _batch(processor, [{**p, "labels": p["labels"]} for p in prompts])
    out = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    for row, p in zip(out, prompts):
        alone = model.generate(**p, max_new_tokens=4, min_new_tokens=4, do_sample=False)[0]
        assert torch.equal(row[-4:], alone[-4:])


def test_video_projector_can_start_from_the_image_projector(model):
    model.init_video_projector_from_image()
    for a, b in zip(model.vision_projector.parameters(), model.video_projector.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()      # a copy, not shared weights


def test_gradient_checkpointing_with_a_frozen_llm_keeps_encoder_gradients(cfg, processor):
    """Stages 1a/1b/1e freeze the LM: checkpointing must still carry gradients back to the encoders, unchanged."""
    torch.manual_seed(0)
    model = build_model(cfg, processor.tokenizer).train()
    model.llm.requires_grad_(False)
    batch = _batch(processor, [_sample(processor, "image_audio")])
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert {n.split(".")[0] for n in grads[1]} == {"vision_encoder", "vision_projector", "video_projector",
                                                   "audio_encoder", "audio_projector"}
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


def test_conv_gmlp_is_gate_times_up_plus_regrouped_residual():
    torch.manual_seed(0)
    n, d = 4, 6
    proj = ConvGMLP(d, 10, downsample=n).eval()
    x = torch.randn(2, 12, d)
    regrouped = x.reshape(2, 3, n * d)                       # frames t..t+n-1 side by side
    xt = x.transpose(1, 2)
    gated = (torch.nn.functional.silu(proj.gate(xt)) * proj.up(xt)).transpose(1, 2)
    expected = proj.proj(proj.norm(proj.mix(gated) + regrouped))
    torch.testing.assert_close(proj(x), expected)
    with torch.no_grad():                                     # without the gated branch only the residual is left
        proj.mix.weight.zero_()
        proj.mix.bias.zero_()
    torch.testing.assert_close(proj(x), proj.proj(proj.norm(regrouped)))


def test_audio_cropped_to_each_clip_keeps_the_tokens_and_ignores_the_batch(cfg, processor):
    """model.audio.crop_to_clip: the encoder runs over each clip's own frames (the small profile's cost cut). The
    LLM gets as many audio tokens; a clip's features do not depend on what else is in its batch (no padding frame of
    a longer clip reaches it); a clip that fills
    its window is encoded exactly as without cropping; and a false flag stays out of config.json."""
    torch.manual_seed(0)
    cropped = build_model(load_config(overrides={"model": {"audio": {"crop_to_clip": True}}}), processor.tokenizer).eval()
    windowed = build_model(cfg, processor.tokenizer).eval()
    windowed.load_state_dict(cropped.state_dict())
    window = cfg.model.audio.window_seconds
    clips = [processor([{"role": "user", "content": [_wav(s, seed)]}], add_generation_prompt=True)
             for s, seed in ((0.9, 1), (2.2, 2), (window, 3))]
    cat = {k: torch.cat([c[k] for c in clips]) for k in ("audio_features", "audio_window_counts", "audio_token_counts")}
    with torch.no_grad():
        together = cropped.get_audio_features(**cat)
        alone = [cropped.get_audio_features(**{k: c[k] for k in cat}) for c in clips]
        full = windowed.get_audio_features(**cat)
    assert together.shape == full.shape == (int(cat["audio_token_counts"].sum()), cropped.config.text_config.hidden_size)
    torch.testing.assert_close(together, torch.cat(alone))       # up to the rounding of other batch shapes
    n_last = int(cat["audio_token_counts"][-1])
    torch.testing.assert_close(together[-n_last:], full[-n_last:])                 # fills its window: as before
    assert not torch.allclose(together[:-n_last], full[:-n_last])                  # short clips: no padding frames seen
    assert cropped.config.to_diff_dict()["audio_crop_to_clip"] is True
    assert "audio_crop_to_clip" not in windowed.config.to_diff_dict()
