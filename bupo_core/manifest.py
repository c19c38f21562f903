"""Checksummed file manifests: one way to tell whether a folder of files is complete and intact.

Both the converted-model cache (:mod:`bupo_core.models`) and training checkpoints
(:mod:`bupo_core.runs`) end with a JSON manifest, written last, recording every file's size and
SHA-256 (plus a fast *sampled* digest of safetensors files). A folder whose manifest is missing was
never finished; a file whose size, safetensors header or digest differs is truncated or corrupt.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "a.txt").write_text("hello")
>>> _ = write_manifest(d, "m.json", {"format": 1})
>>> manifest_problem(d, "m.json", fmt=1) is None
True
>>> _ = (d / "a.txt").write_text("hellO")
>>> manifest_problem(d, "m.json", fmt=1)
'a.txt content differs from its checksum (corrupt)'
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any


def sampled_digest(path: Path, blocks: int = 64, block_size: int = 1 << 16) -> str:
    """SHA-256 of a file's size, first and last MiB and ``blocks`` evenly spaced blocks (fast on large files)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        for i in range(blocks):
            f.seek(int(size * i / blocks))
            h.update(f.read(block_size))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()


def full_digest(path: Path) -> str:
    """SHA-256 of every byte of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def check_safetensors_header(path: Path) -> None:
    """Raise ``ValueError`` unless the file's safetensors header parses and matches its size."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("file shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        header = json.loads(f.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != path.stat().st_size:
        raise ValueError(f"size {path.stat().st_size} != {8 + n + end} declared by the header")


def write_manifest(folder: str | Path, name: str, fields: dict[str, Any]) -> dict:
    """Write ``folder/name``: ``fields`` plus ``"files"`` (size, SHA-256, sampled digest of safetensors).

    The manifest is written atomically (temporary file, then rename), after every other file.
    """
    folder = Path(folder)
    files = {}
    for p in sorted(folder.iterdir()):
        if p.name == name or not p.is_file():
            continue
        info: dict = {"size": p.stat().st_size, "sha256": full_digest(p)}
        if p.suffix == ".safetensors":
            info["sampled_sha256"] = sampled_digest(p)
        files[p.name] = info
    manifest = {**fields, "files": files}
    tmp = folder / f".{name}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / name)
    return manifest


def read_manifest(folder: str | Path, name: str) -> tuple[dict | None, str | None]:
    """``(manifest, None)``, or ``(None, reason)`` when it is missing or unreadable."""
    try:
        return json.loads((Path(folder) / name).read_text()), None
    except FileNotFoundError:
        return None, "no manifest (never finished)"
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"unreadable manifest ({exc})"


def manifest_problem(folder: str | Path, name: str, *, fmt: int, verify: str = "sampled") -> str | None:
    """Why the files of ``folder`` do not match its manifest ``name``, or ``None`` when they all do.

    Args:
        fmt: the ``"format"`` the manifest must have.
        verify: ``"sampled"``: sizes, safetensors headers, sampled digests of safetensors files and
            full SHA-256 of the other (small) files; ``"full"``: SHA-256 of every byte.
    """
    folder = Path(folder)
    manifest, why = read_manifest(folder, name)
    if manifest is None:
        return why
    if manifest.get("format") != fmt:
        return f"format {manifest.get('format')} != {fmt}"
    for fname, info in manifest.get("files", {}).items():
        p = folder / fname
        if not p.is_file():
            return f"missing file {fname}"
        if p.stat().st_size != info["size"]:
            return f"{fname} has {p.stat().st_size} bytes, expected {info['size']} (partial: truncated or altered)"
        if fname.endswith(".safetensors"):
            try:
                check_safetensors_header(p)
            except (ValueError, json.JSONDecodeError, KeyError, UnicodeDecodeError) as exc:
                return f"{fname} is corrupt ({exc})"
            ok = sampled_digest(p) == info["sampled_sha256"] if verify != "full" else full_digest(p) == info["sha256"]
        else:
            ok = "sha256" not in info or full_digest(p) == info["sha256"]
        if not ok:
            return f"{fname} content differs from its checksum (corrupt)"
    return None
