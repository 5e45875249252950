"""Figures for the README and the notebooks (matplotlib, each saved as PNG and SVG), and offline `dvc plots`.
One module per subject; everything is importable from here (``from omni_core import plots``).

- ``style``: :func:`save_figure` and the helpers every figure shares.
- ``training``: :func:`plot_loss_curves` (one panel per kind of loss), :func:`plot_stage_loss`,
  :func:`plot_stage_grid` (stages x modules, trained or frozen, beside the paper's setting).
- ``results``: :func:`plot_metric_vs_chance`, :func:`plot_confusion`, :func:`plot_prediction_grid` (notebook 04).
- ``ablations``: :func:`plot_downsample_ablation`, :func:`plot_staging_ablation`, :func:`plot_seed_spread`.
- ``tokens``: :func:`plot_token_budget`, :func:`plot_pool_geometry`, :func:`plot_token_layout`,
  :func:`plot_anyres_tiling` (notebook 00).
- ``samples``: :func:`show_samples` (notebook 01).
- ``realtime``: :func:`plot_speech_boundaries`, :func:`plot_turn_latency`, :func:`plot_stream_timeline` with
  :class:`StreamRecorder` (notebook 06).
- ``dvc_plots``: :func:`render_dvc_plots`, `dvc plots show --json` rendered with vl-convert (the HTML
  `dvc plots show` writes loads Vega from a CDN and is blank offline).
"""
from .ablations import plot_downsample_ablation, plot_seed_spread, plot_staging_ablation
from .dvc_plots import render_dvc_plots
from .realtime import StreamRecorder, plot_speech_boundaries, plot_stream_timeline, plot_turn_latency
from .results import (
                      CONFUSION_TASKS,
                      confusion_matrix,
                      confusion_panels,
                      headline_rows,
                      is_right,
                      plot_confusion,
                      plot_metric_vs_chance,
                      plot_prediction_grid,
                      prediction_records,
                      question_kind,
)
from .samples import show_samples
from .style import save_figure
from .tokens import (
                      TOKEN_COLORS,
                      TokenRun,
                      format_runs,
                      plot_anyres_tiling,
                      plot_pool_geometry,
                      plot_token_budget,
                      plot_token_layout,
                      token_layout_rows,
                      token_runs,
)
from .training import (
                      LOSS_KINDS,
                      find_loss_log,
                      loss_kind,
                      paper_lr_stages,
                      plot_loss_curves,
                      plot_stage_grid,
                      plot_stage_loss,
                      read_tsv,
                      stage_losses,
)

__all__ = ["save_figure", "find_loss_log", "read_tsv", "stage_losses", "LOSS_KINDS", "loss_kind", "plot_loss_curves",
           "plot_stage_loss", "paper_lr_stages", "plot_stage_grid", "headline_rows", "plot_metric_vs_chance",
           "CONFUSION_TASKS", "prediction_records", "question_kind", "confusion_matrix", "confusion_panels",
           "plot_confusion", "is_right", "plot_prediction_grid", "plot_downsample_ablation", "plot_staging_ablation",
           "plot_seed_spread", "plot_token_budget", "plot_pool_geometry", "TOKEN_COLORS", "TokenRun", "token_runs",
           "format_runs", "token_layout_rows", "plot_token_layout", "plot_anyres_tiling", "show_samples",
           "plot_speech_boundaries", "plot_turn_latency", "StreamRecorder", "plot_stream_timeline",
           "render_dvc_plots"]
