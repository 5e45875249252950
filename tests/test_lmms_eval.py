"""The lmms-eval adapter against the real lmms-eval (requirements-lmms.txt, installed by `make setup`): its
request objects (chat, plain and loglikelihood) on a tiny random checkpoint answer like omni_core's runner,
our image_vqa split runs through lmms-eval's own evaluator with the same answers and score, and installing
the extra moved none of the project's pins."""
from __future__ import annotations

import importlib.metadata
import json
import re

import pytest
import torch
import yaml
from train_fixtures import make_tiny_data, tiny_cfg

from omni_core.config import REPO_ROOT
from omni_core.eval.lmms_eval_adapter import INSTALL_HINT, lmms_available, lmms_class
from omni_core.eval.lmms_tasks import TASKS_DIR
from omni_core.eval.runner import evaluate, read_manifest, suppressed_token_ids

if not lmms_available():
    pytest.fail(f"lmms-eval is missing, so the adapter is untested: {INSTALL_HINT}", pytrace=False)

from lmms_eval.api.instance import Instance  # noqa: E402

TASKS = ("image_vqa", "asr", "video_qa")
N_TEST = 3


def _pins(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)==([^\s#;]+)", line)
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def test_project_pins_unchanged_by_the_lmms_extra():
    pins = {**_pins(REPO_ROOT / "requirements.txt"), **_pins(REPO_ROOT / "requirements-nodeps.txt")}
    assert len(pins) > 40
    moved = {name: (want, importlib.metadata.version(name)) for name, want in pins.items()
             if importlib.metadata.version(name) != want}
    assert not moved, f"installed versions differ from the pins (pinned, installed): {moved}"
    extra = _pins(REPO_ROOT / "requirements-lmms.txt")
    assert not set(extra) & set(pins), "requirements-lmms.txt must not re-pin a package of the project"
    assert {k: importlib.metadata.version(k) for k in extra} == extra


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from omni_core.model import build_model, load_tokenizer
    from omni_core.processing import OmniProcessor

    root = tmp_path_factory.mktemp("lmms")
    data = make_tiny_data(root / "data", n_train=2, n_val=N_TEST, tasks=TASKS)
    cfg = tiny_cfg(root, data)
    processor = OmniProcessor(load_tokenizer(data / "tokenizer"), cfg.model)
    torch.manual_seed(0)
    model = build_model(cfg, processor.tokenizer).eval()
    with torch.no_grad():          # larger weights than the init: varied answers instead of one repeated token
        for prm in model.parameters():
            if prm.dim() >= 2:
                prm.normal_(0, 0.2)
    expected = evaluate(cfg, "mem", tasks=TASKS, model=model, processor=processor, write=False)["predictions"]
    docs = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    return cfg, model, processor, data, docs, expected


def _chat_doc_to_messages(data):
    """A task's doc_to_messages the way lmms-eval tasks write them: media parts with a ``url``."""
    def doc_to_messages(doc):
        return [{"role": "user", "content": [{"type": c["type"], "url": str(data / c["path"])} if "path" in c
                                             else {"type": "text", "text": c["text"]}
                                             for c in doc["messages"][0]["content"]]}]
    return doc_to_messages


def _instance(kind: str, args: tuple, i: int) -> Instance:
    return Instance(request_type=kind, arguments=args, idx=0, metadata={"task": "mine", "doc_id": i, "repeats": 1})


def test_chat_plain_and_loglikelihood_requests(setup):
    from lmms_eval.api.model import lmms

    cfg, model, processor, data, docs, expected = setup
    chat_cls, simple_cls = lmms_class(), lmms_class(simple=True)
    assert issubclass(chat_cls, lmms) and chat_cls.is_simple is False and simple_cls.is_simple is True
    m = chat_cls(model=model, processor=processor, cfg=cfg, batch_size=2)
    m.task_dict = {"mine": {"test": docs}}
    want = [p["prediction"] for t in TASKS for p in expected[t]]
    ids = [i for t in TASKS for i, d in enumerate(docs) if d["task"] == t][:len(want)]
    assert len(ids) == len(want) == len(TASKS) * N_TEST
    gen = {"max_new_tokens": cfg.eval.max_new_tokens, "until": [], "temperature": 0}
    to_messages = _chat_doc_to_messages(data)

    # chat requests: (context, doc_to_messages, gen_kwargs, doc_id, task, split)
    chat = [_instance("generate_until", ("", to_messages, dict(gen), i, "mine", "test"), i) for i in ids]
    got = m.generate_until(chat)
    assert isinstance(got, list) and len(got) == len(chat) and all(isinstance(a, str) for a in got)
    assert got == want and len(set(got)) >= 3

    # plain requests: (context, gen_kwargs, doc_to_visual, doc_id, task, split), question text after the media
    def doc_to_visual(doc):
        return [str(data / c["path"]) for c in doc["messages"][0]["content"] if "path" in c]

    plain = [_instance("generate_until", (docs[i]["messages"][0]["content"][-1]["text"], dict(gen), doc_to_visual, i,
                                          "mine", "test"), i) for i in ids]
    simple = simple_cls(model=model, processor=processor, cfg=cfg, batch_size=3)
    simple.task_dict = {"mine": {"test": docs}}
    assert simple.generate_until(plain) == want
    assert m.generate_until(plain[:2]) == want[:2]      # either class takes either kind of request
    # stop strings cut the answer; max_new_tokens bounds it
    stop = want[0][1:3]
    cut = m.generate_until([_instance("generate_until", ("", to_messages, {**gen, "until": [stop]}, ids[0], "mine",
                                                         "test"), ids[0])])
    assert cut == [want[0].split(stop)[0].strip()]
    short = m.generate_until([_instance("generate_until", ("", to_messages, {**gen, "max_new_tokens": 1}, ids[0],
                                                           "mine", "test"), ids[0])])
    assert len(processor.tokenizer(short[0], add_special_tokens=False)["input_ids"]) <= 2

    # loglikelihood: (context, doc_to_target | continuation, doc_to_visual, doc_id, task, split). The greedy
    # continuation is the model's first greedy token, taken where it survives decode + strip + encode (a random
    # model's tokens are often byte fragments or carry a leading space)
    tok, banned = processor.tokenizer, suppressed_token_ids(processor.tokenizer)

    def greedy_token(i: int) -> str | None:
        feat = processor(m.request_messages(chat[ids.index(i)].args)[0], base_dir=".", add_generation_prompt=True)
        with torch.no_grad():
            logits = model(**{k: (v[None] if k in ("input_ids", "attention_mask") else v) for k, v in feat.items()
                              if k != "labels"}).logits[0, -1]
        logits[banned] = float("-inf")
        best = int(logits.argmax())
        text = tok.decode([best]).strip()
        return text if text and tok(text, add_special_tokens=False)["input_ids"] == [best] else None

    i0, greedy_answer = next((i, a) for i in ids if (a := greedy_token(i)))
    question = docs[i0]["messages"][0]["content"][-1]["text"]
    reqs = [_instance("loglikelihood", (question, lambda d: greedy_answer, doc_to_visual, i0, "mine", "test"), i0),
            _instance("loglikelihood", (question, " " + greedy_answer, doc_to_visual, i0, "mine", "test"), i0),
            _instance("loglikelihood", (question, " hello world", doc_to_visual, i0, "mine", "test"), i0),
            _instance("loglikelihood", ("", " " + greedy_answer), i0)]
    ll = m.loglikelihood(reqs)
    assert len(ll) == 4 and all(isinstance(lp, float) and isinstance(g, bool) for lp, g in ll)
    assert all(lp < 0 for lp, _ in ll)
    assert ll[0] == ll[1]                   # a callable target and lmms-eval's " "-prefixed continuation agree
    assert ll[0][1] is True and ll[2][1] is False   # the greedy answer is greedy; another one is not
    assert ll[3][0] != ll[0][0]             # without the image and question the answer scores differently
    with pytest.raises(ValueError, match="5 fields; lmms-eval 0.7 sends 6"):
        m.generate_until([_instance("generate_until", ("", gen, i0, "mine", "test"), i0)])


def test_registered_for_lmms_eval_cli():
    from lmms_eval.models import get_model

    from omni_core.eval.lmms_eval_adapter import register

    register()
    assert get_model("omni_core") is lmms_class()
    assert get_model("omni_core", force_simple=True) is lmms_class(simple=True)


def test_our_split_through_simple_evaluate(setup, tmp_path):
    """omni_core_image_vqa (omni_core/eval/lmms_tasks/) through lmms-eval's evaluator and task manager, for the
    chat and the simple model: the same answers and accuracy as omni_core.eval on the same samples."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    cfg, model, processor, data, docs, expected = setup
    # our manifest instead of data/prepared: a task that includes the shipped one and points at it
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({
        "include": str(TASKS_DIR / "omni_core_image_vqa.yaml"), "task": "omni_core_image_vqa_tiny",
        "dataset_kwargs": {"data_files": {"test": str(data / "test.jsonl")}},
        "generation_kwargs": {"max_new_tokens": cfg.eval.max_new_tokens, "until": [], "do_sample": False},
        "lmms_eval_specific_kwargs": {"default": {"data_root": str(data)}}}))
    manager = TaskManager(include_path=[str(TASKS_DIR), str(tmp_path)], include_defaults=False)
    assert {"omni_core_image_vqa", "omni_core_image_vqa_tiny"} <= set(manager.all_tasks)
    want = [p["prediction"] for p in expected["image_vqa"]]
    refs = [s.reference for s in read_manifest(data / "test.jsonl", ["image_vqa"])["image_vqa"]]
    ours = evaluate(cfg, "mem", tasks=["image_vqa"], model=model, processor=processor, write=False)
    for simple in (False, True):
        lm = lmms_class(simple)(model=model, processor=processor, cfg=cfg, batch_size=2)
        out = simple_evaluate(model=lm, tasks=["omni_core_image_vqa_tiny"], task_manager=manager, limit=N_TEST,
                              log_samples=True, bootstrap_iters=0, process_docs_parallel=1, verbosity="ERROR")
        samples = out["samples"]["omni_core_image_vqa_tiny"]
        assert [s["target"] for s in samples] == refs
        assert [s["resps"][0][0] if isinstance(s["resps"][0], list) else s["resps"][0] for s in samples] == want, simple
        acc = out["results"]["omni_core_image_vqa_tiny"]["accuracy,none"]
        assert acc == pytest.approx(ours["tables"]["image"]["tasks"]["image_vqa"]["accuracy"])
