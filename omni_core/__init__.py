"""omni_core: a slim, readable reproduction of Baichuan-Omni (arXiv 2410.08565).

Importing the package makes every entry point offline by default: nothing reaches a model hub at run
time; full-scale weights load from local directories named in configs/full.yaml.
"""
import os
import warnings

# Without ipywidgets, tqdm.auto falls back to the plain text bar (what papermill's reports should hold
# anyway); the warning it prints about that would open every executed notebook.
warnings.filterwarnings("ignore", message="IProgress not found")

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "DVC_NO_ANALYTICS"):
    os.environ.setdefault(_key, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from omni_core.config import Config, ConfigError, load_config  # noqa: E402

__all__ = ["Config", "ConfigError", "load_config"]
__version__ = "0.4.0"
