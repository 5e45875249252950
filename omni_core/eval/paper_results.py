"""The paper's published numbers for Baichuan-Omni 7B (arXiv 2410.08565, Tables 1-7), as data.

These are *reported*, never measured here: they come from the paper's own table images (Tables 1-7;
``docs/paper.md``) and are always shown under :data:`LABEL`, in their own
column, beside (never inside) the numbers this repository measures. They are on public benchmarks
(MMBench, VideoMME, Fleurs, ...) that the tiny profile does not run; the lmms-eval adapter
(:mod:`omni_core.eval.lmms_eval_adapter`) is how a user scores a full-size checkpoint on the same benchmarks.
"""
from __future__ import annotations

from dataclasses import dataclass

LABEL = "reported (paper)"
SOURCE = "Baichuan-Omni technical report, arXiv 2410.08565, Tables 1-7 (7B model, zero-shot)"


@dataclass(frozen=True)
class Reported:
    benchmark: str
    value: float
    metric: str                    # what the number is, in the paper's words
    paper_table: int               # the paper's table number (0 = quoted by the 1.5 report)
    higher_is_better: bool = True
    note: str | None = None


def _rows(table: int, metric: str, values: dict[str, float], higher: bool = True,
          note: str | None = None) -> list[Reported]:
    return [Reported(k, v, metric, table, higher, note) for k, v in values.items()]


# Our tables (text, image, video, audio, omni) -> the paper's rows for Baichuan-Omni.
REPORTED: dict[str, list[Reported]] = {
    "text": _rows(1, "Acc. (%)", {"MMLU": 65.3, "CMMLU": 72.2, "AGIEval": 47.7, "C-Eval": 68.9}),
    "image": (
        _rows(2, "Acc. (%)", {"MMBench": 76.2, "MMBench-CN": 74.9, "M3GIA": 34.7, "SEED-IMG": 74.1,
                              "MMMU val": 47.3, "HallusionBench": 47.8})
        + _rows(2, "score (sum of perception + cognition)", {"MME": 2186.9})
        + _rows(3, "Acc. (%)", {"RealWorldQA": 62.6, "MMVet": 65.4, "MathVista-mini": 51.9,
                                "TextVQA val": 74.3, "ChartQA": 79.6})
        + _rows(3, "score (x10 of 1000)", {"OCRBench": 70.0})
    ),
    "video": (
        _rows(4, "Acc. (%)", {"MVBench": 60.9, "EgoSchema": 58.8, "VideoMME": 58.2, "Perception-Test": 56.8},
              note="1 fps, max 48 frames")
        + _rows(5, "Acc. (%)", {"ActivityNet-QA": 58.6, "MSVD-QA": 72.2})
        + _rows(5, "GPT score (0-5)", {"ActivityNet-QA (GPT score)": 3.7, "MSVD-QA (GPT score)": 4.0})
    ),
    "audio": (
        _rows(6, "WER (%)", {"Fleurs test-zh": 7.0, "Fleurs test-en": 4.7, "WenetSpeech test_net": 6.9,
                             "WenetSpeech test_meeting": 8.4, "KeSpeech (mean of 9 dialects)": 6.7}, higher=False,
              note="KeSpeech mean computed from the paper's 9 per-dialect numbers")
        + _rows(6, "CER (%)", {"WenetSpeech test_net (CER)": 7.1, "WenetSpeech test_meeting (CER)": 8.9},
                higher=False)
        + _rows(7, "BLEU", {"CoVoST-2 zh->en": 22.1, "CoVoST-2 en->zh": 40.2})
        + _rows(7, "AIR-Bench chat score (0-10)", {"AIR-Bench speech": 7.42, "AIR-Bench sound": 7.26,
                                                   "AIR-Bench music": 6.12, "AIR-Bench mixed": 5.76})
    ),
    "omni": _rows(0, "Acc. (%)", {"OmniBench image+audio": 32.2},
                  note="v1 number as quoted in the Baichuan-Omni-1.5 report (arXiv 2501.15368)"),
}

# The paper's audio ablation (Conv-GMLP downsample rate n, 1.5B audio LLM, average WER %), read from
# Figure 6 by two secondary sources; plotted beside ours in the ablation figure.
REPORTED_DOWNSAMPLE_WER: dict[int, float] = {2: 7.7, 4: 8.3, 8: 8.0}


def reported(table: str) -> list[Reported]:
    """The paper's rows for one of our tables (text, image, video, audio, omni)."""
    if table not in REPORTED:
        raise KeyError(f"no reported numbers for table {table!r}; tables: {', '.join(REPORTED)}")
    return REPORTED[table]


def as_dict() -> dict:
    """JSON-ready form, every value under the ``reported (paper)`` label."""
    return {"label": LABEL, "source": SOURCE,
            "tables": {t: [r.__dict__ for r in rows] for t, rows in REPORTED.items()},
            "downsample_ablation_wer": {str(k): v for k, v in REPORTED_DOWNSAMPLE_WER.items()}}
