"""Tokenizers: a small byte-level BPE trained for the tiny profile, and our chat template for any tokenizer.

The chat template is ChatML with typed content parts (text / image / video / audio). Media parts render
as ``<|x_start|>`` + N x ``<|x_pad|>`` + ``<|x_end|>`` where N is the part's ``num_tokens`` (the processor
fills it in). Assistant turns sit inside ``{% generation %}`` so labels come from
``return_assistant_tokens_mask``, never from separator arithmetic. That mask needs a fast tokenizer: a slow
one (Baichuan's SentencePiece ``BaichuanTokenizer``) is converted by `as_fast_tokenizer`.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import SentencePieceExtractor, convert_slow_tokenizer

from omni_core.config import REPO_ROOT
from omni_core.model.configuration import MEDIA, SPECIAL_TOKENS
from omni_core.model.pretrained import check_remote_code

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


# Text a converted tokenizer must split exactly as its slow original: spaces (leading, doubled), tab, newlines,
# Chinese with full-width punctuation, digits, and an emoji that needs SentencePiece's byte fallback.
CONVERSION_PROBE = " Describe  the image.\tIt shows 12 cats.\n\n你好，世界。 🙂 "


def as_fast_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """``tokenizer`` itself if fast, else a `PreTrainedTokenizerFast` copy with the same vocabulary, special
    tokens and added tokens.

    A slow SentencePiece tokenizer of a class transformers does not know (Baichuan's) is rebuilt from its
    ``.model`` file as AutoTokenizer rebuilds one of an unknown class, plus the dummy prefix the file asks for;
    any other goes through ``convert_slow_tokenizer``. The copy must tokenize `CONVERSION_PROBE` and map the
    vocabulary exactly as the original, or this raises.
    """
    if tokenizer.is_fast:
        return tokenizer
    vocab_file = str(getattr(tokenizer, "vocab_file", None) or "")
    name = type(tokenizer).__name__ + (f" ({tokenizer.name_or_path})" if tokenizer.name_or_path else "")
    fix = ("save a fast tokenizer for it (tokenizer.json, and a tokenizer_config.json without auto_map) "
           "in a directory of its own and point model.tokenizer.path there")
    try:
        if vocab_file.endswith(".model"):
            # transformers 5's SpmConverter cannot build SentencePiece BPE (its extractor changed signature):
            # convert_to_native_format is the path AutoTokenizer itself takes for a tokenizer.model
            backend = PreTrainedTokenizerFast.convert_to_native_format(vocab_file=vocab_file)["tokenizer_object"]
            if SentencePieceExtractor(vocab_file).proto.normalizer_spec.add_dummy_prefix:
                # SentencePiece prepends "▁" to every piece of text, even one that starts with a space
                backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), backend.normalizer])
                backend.decoder = decoders.Sequence([backend.decoder, decoders.Strip(" ", 1, 0)])
        else:
            backend = convert_slow_tokenizer(tokenizer)
    except Exception as e:       # no converter, no sentencepiece/protobuf, an unreadable model file, ...
        raise TypeError(f"{name} is a slow tokenizer and converting it to a fast one failed ({type(e).__name__}: "
                        f"{e}); assistant-token masks need a fast tokenizer: {fix}") from e
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, name_or_path=tokenizer.name_or_path, model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side, add_bos_token=getattr(tokenizer, "add_bos_token", False),
        add_eos_token=getattr(tokenizer, "add_eos_token", False), chat_template=tokenizer.chat_template,
        extra_special_tokens=list(tokenizer.extra_special_tokens), **tokenizer.special_tokens_map)
    fast.add_tokens([token for _, token in sorted(tokenizer.added_tokens_decoder.items())])   # ids in order
    if fast.get_vocab() != tokenizer.get_vocab():
        raise TypeError(f"{name} converted to a fast tokenizer maps tokens to other ids; assistant-token masks "
                        f"need a fast tokenizer: {fix}")
    slow_ids, fast_ids = tokenizer.encode(CONVERSION_PROBE), fast.encode(CONVERSION_PROBE)
    if slow_ids != fast_ids:
        raise TypeError(f"{name} converted to a fast tokenizer splits {CONVERSION_PROBE!r} as {fast_ids}, the "
                        f"original as {slow_ids}; assistant-token masks need a fast tokenizer: {fix}")
    return fast


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add ChatML + media special tokens and our chat template to any HF tokenizer (idempotent).

    A slow tokenizer is first converted to a fast copy (`as_fast_tokenizer`), which is returned. The eos token
    becomes ``<|im_end|>`` (end of an assistant turn); a pad token is set if missing.
    """
    tokenizer = as_fast_tokenizer(tokenizer)
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


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """A saved tokenizer directory (ours or any HF one) with our template and special tokens applied.

    A relative path is looked up in the working directory, then in the repo root. A tokenizer that ships its
    own code (``auto_map`` in tokenizer_config.json) loads only with ``trust_remote_code``
    (``cfg.model.trust_remote_code``); a slow one comes back as a fast copy.
    """
    path = Path(path)
    if not path.is_absolute() and not path.is_dir() and (REPO_ROOT / path).is_dir():
        path = REPO_ROOT / path
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist: run data preparation (tiny profile) "
                                "or `python -m omni_core.model.pretrained` (small profile), or fix model.tokenizer.path")
    check_remote_code(path, trust_remote_code, "model.tokenizer.path", "tokenizer_config.json")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if (tokenizer.clean_up_tokenization_spaces and isinstance(tokenizer, PreTrainedTokenizerFast)
            and type(tokenizer.backend_tokenizer.model).__name__ == "BPE"):
        # SmolLM2's config asks for it; transformers ignores it for a BPE tokenizer, warning at every decode
        tokenizer.clean_up_tokenization_spaces = False
    return prepare_tokenizer(tokenizer)
