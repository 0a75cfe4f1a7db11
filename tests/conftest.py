import os

import pytest
import torch

# Tests never touch the user's cache and never reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CLIPLAB_HOME", str(tmp_path_factory.getbasetemp() / "cliplab_home"))
