"""Tokenizers: a small byte-level BPE trained for the tiny profile, and our chat template for any tokenizer.

The chat template is ChatML with typed content parts (text / image / video / audio). Media parts render
as ``<|x_start|>`` + N x ``<|x_pad|>`` + ``<|x_end|>`` where N is the part's ``num_tokens`` (the processor
fills it in). Assistant turns sit inside ``{% generation %}`` so labels come from
``return_assistant_tokens_mask``, never from separator arithmetic.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from omni_core.config import REPO_ROOT
from omni_core.model.configuration import MEDIA, SPECIAL_TOKENS

IM_START, IM_END, EOT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
MEDIA_TOKENS = [SPECIAL_TOKENS[m][k] for m in MEDIA for k in ("start", "pad", "end")]

CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- elif part['type'] in ['image', 'video', 'audio'] -%}"
    "{{ '<|' + part['type'] + '_start|>' + ('<|' + part['type'] + '_pad|>') * (part['num_tokens'] "
    "if part['num_tokens'] is defined else 1) + '<|' + part['type'] + '_end|>' }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ render(message['content']) + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{%- else -%}{{ render(message['content']) + '<|im_end|>\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add ChatML + media special tokens and our chat template to any HF fast tokenizer (idempotent).

    The eos token becomes ``<|im_end|>`` (end of an assistant turn); a pad token is set if missing.
    """
    if not tokenizer.is_fast:
        raise TypeError(f"{type(tokenizer).__name__} is a slow tokenizer; assistant-token masks need a fast one "
                        "(load it with use_fast=True)")
    vocab = tokenizer.get_vocab()
    missing = [t for t in [IM_START, IM_END, EOT, *MEDIA_TOKENS] if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    # tokens that exist as plain vocabulary (e.g. SmolLM2's <|im_start|>) must still never be split
    tokenizer.add_tokens([t for t in [IM_START, IM_END, *MEDIA_TOKENS] if t not in missing], special_tokens=True)
    tokenizer.eos_token = IM_END
    if tokenizer.pad_token is None:
        tokenizer.pad_token = EOT
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a deterministic byte-level BPE on ``texts`` and prepare it with our template and special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [EOT, IM_START, IM_END, *MEDIA_TOKENS]
    if vocab_size <= len(specials) + 256:
        raise ValueError(f"vocab_size = {vocab_size} is too small: byte-level BPE needs > {len(specials) + 256} "
                         "(256 bytes + special tokens); set model.tokenizer.vocab_size higher")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token=IM_END, pad_token=EOT,
                                   unk_token=None, model_max_length=1 << 20)
    return prepare_tokenizer(fast)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A saved tokenizer directory (ours or any HF one) with our template and special tokens applied.

    A relative path is looked up in the working directory, then in the repo root.
    """
    path = Path(path)
    if not path.is_absolute() and not path.is_dir() and (REPO_ROOT / path).is_dir():
        path = REPO_ROOT / path
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist: run data preparation (tiny profile) "
                                "or `python -m omni_core.model.pretrained` (small profile), or fix model.tokenizer.path")
    return prepare_tokenizer(AutoTokenizer.from_pretrained(path))
