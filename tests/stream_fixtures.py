"""What the streaming tests share: a tiny config, a random-init tiny model with its processor, and a speech
boundary head trained on flite streams (test_stream, test_model_boundary, test_web_demo; conftest.py makes
them fixtures)."""
import torch

from omni_core.config import load_config
from omni_core.model import build_model, train_tokenizer
from omni_core.processing import OmniProcessor
from omni_core.speech_boundary import synth_streams, train_speech_boundary_head, tts_sentences

TINY = {"model": {"llm": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 128},
                  "vision": {"image_size": 16, "patch_size": 4, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                             "intermediate_size": 64},
                  "audio": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "ffn_size": 64, "window_seconds": 1.0}}}


def tiny_stream_cfg(**stream):
    return load_config(overrides={**TINY, "stream": stream} if stream else TINY)


def tiny_model_and_processor(cfg):
    torch.manual_seed(0)
    tok = train_tokenizer(["the cat sat on the mat", "what is in the video", "hello world"] * 20, vocab_size=300)
    processor = OmniProcessor(tok, cfg.model)
    return build_model(cfg, processor.tokenizer).eval(), processor


def trained_speech_boundary_head():
    return train_speech_boundary_head(synth_streams(48, ("slt", "kal16", "rms"), seed=0, sentences=tts_sentences()[0]))

