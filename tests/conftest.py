import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(2)

from hone.quiet import quiet_libraries  # noqa: E402

quiet_libraries()


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from tiny import make_model

    return make_model(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture
def chat_file(tmp_path) -> Path:
    from tiny import make_chat_data

    return make_chat_data(tmp_path / "train.jsonl")
