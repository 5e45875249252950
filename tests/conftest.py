"""Fixtures the streaming tests share, built once per test module (tests/stream_fixtures.py)."""
import pytest
from stream_fixtures import tiny_model_and_processor, tiny_stream_cfg, trained_speech_boundary_head


@pytest.fixture(scope="module")
def cfg():
    return tiny_stream_cfg()


@pytest.fixture(scope="module")
def model_and_processor(cfg):
    return tiny_model_and_processor(cfg)


@pytest.fixture(scope="module")
def speech_boundary_head():
    return trained_speech_boundary_head()
