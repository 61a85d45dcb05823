"""Model specs: default, folders, hub ids and endpoints; bad ones fail clearly."""

import pytest

from refusalkit.errors import ModelSpecError
from refusalkit.models.spec import load_model, parse_model_spec


def test_parse_forms(tmp_path):
    assert parse_model_spec("default") == ("default", {})
    assert parse_model_spec(str(tmp_path)) == ("local", {"path": str(tmp_path)})
    assert parse_model_spec("HuggingFaceTB/SmolLM2-135M-Instruct")[0] == "hub"
    assert parse_model_spec("openai:llama3@http://127.0.0.1:8000/v1") == (
        "openai", {"model": "llama3", "base_url": "http://127.0.0.1:8000/v1"})


@pytest.mark.parametrize("spec", ["", "nonsense", "./missing-folder", "openai:@http://x", "openai:m@ftp://x"])
def test_bad_specs(spec):
    with pytest.raises(ModelSpecError):
        parse_model_spec(spec)


def test_uncached_hub_id_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelSpecError, match="--model default"):
        load_model("nobody-here/not-a-model")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelSpecError, match="config.json"):
        load_model(str(tmp_path))
