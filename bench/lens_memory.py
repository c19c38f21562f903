"""Benchmark: memory and time of the internal-policy statistics, ours vs the authors' approach.

Both sides compute the entropy of every internal policy (H^0..H^L, LN1 input, A^l, LN2 input, F^l
for every block) at the same response positions of the same sequences, in float32:

* reference (the authors' script style): forward hooks copy every block's and module's output for
  the whole sequence to the CPU, the full model runs (lm_head included), then for each captured
  tensor a full-vocabulary softmax over all response positions at once, entropy = -sum p log(p).
* ours: :func:`bupo_core.lens.internal_policy_statistics`: hooks reduce each module's vectors at
  the response positions to per-token scalars during the forward, in chunks of tokens, so only one
  chunk's [tokens, vocab] logits exist at a time; the lm_head is not run.

Measurement. The two sides run interleaved in ONE process, one sequence at a time, alternating which
side goes first, so CPU contention from other jobs hits both alike. Before each run the kernel's
peak-RSS counter is reset (``/proc/self/clear_refs`` = 5) and the current RSS read; after the run
``VmHWM`` (peak RSS) is read. "Peak extra memory" = max over sequences of (peak RSS during the run -
RSS before it): the memory the statistics need on top of the loaded model. Raw peak RSS figures are
reported too. Where ``clear_refs`` is unavailable, a 1 ms psutil sampler is used instead.

Run (writes bench/results/lens_memory.json):

    .venv/bin/python bench/lens_memory.py                 # >= 2000 response tokens, ~20-40 min on 2 busy cores
    .venv/bin/python bench/lens_memory.py --min-tokens 200 --out /tmp/quick.json   # a quick check
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bupo_core import load_model  # noqa: E402
from bupo_core.adapter import ArchitectureAdapter, first_tensor  # noqa: E402
from bupo_core.analysis import task_prompts  # noqa: E402
from bupo_core.lens import LensConfig, internal_policy_statistics  # noqa: E402
from bupo_core.rollout import SamplingConfig, generate  # noqa: E402
from bupo_core.sequences import pack_sequences  # noqa: E402


# --------------------------------------------------------------------------- memory probes
def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))


def _libc():
    try:
        import ctypes  # noqa: PLC0415

        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


LIBC = _libc()
M_MMAP_THRESHOLD = -3
if LIBC is not None:
    # Serve every allocation above 64 KiB with its own mmap, returned to the OS when freed, so that
    # RSS follows the live memory of each side and one side's freed pages do not hide the other's peak.
    LIBC.mallopt(M_MMAP_THRESHOLD, 64 * 1024)


class PeakRSS:
    """Peak resident memory of this process during a ``with`` block, in MiB (``.peak``, ``.before``)."""

    def __init__(self) -> None:
        self.use_hwm = Path("/proc/self/clear_refs").exists() and os.access("/proc/self/clear_refs", os.W_OK)
        self.method = "VmHWM after clear_refs reset" if self.use_hwm else "psutil RSS sampled every 1 ms"

    def __enter__(self) -> PeakRSS:
        gc.collect()
        if LIBC is not None:
            LIBC.malloc_trim(0)
        if self.use_hwm:
            Path("/proc/self/clear_refs").write_text("5")
            self.before = _status_kib("VmRSS") / 1024
        else:
            import psutil  # noqa: PLC0415

            proc = psutil.Process()
            self.before = proc.memory_info().rss / 2**20
            self._max = self.before
            self._stop = False

            def sample() -> None:
                while not self._stop:
                    self._max = max(self._max, proc.memory_info().rss / 2**20)
                    time.sleep(0.001)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.use_hwm:
            self.peak = _status_kib("VmHWM") / 1024
        else:
            self._stop = True
            self._thread.join()
            self.peak = self._max


# --------------------------------------------------------------------------- the two approaches
@torch.no_grad()
def reference_entropies(model, adapter: ArchitectureAdapter, input_ids: torch.Tensor, positions: torch.Tensor) -> dict:
    """The authors' style: copy every module output (whole sequence) to the CPU, then a full-vocab softmax each."""
    store: dict[str, torch.Tensor] = {}
    handles = []

    def save(name: str):
        def hook(module, args, output) -> None:  # returns None: never replaces the output
            store[name] = first_tensor(output).detach().to("cpu", torch.float32).clone()

        return hook

    def save_pre(module, args, kwargs) -> None:
        h = args[0] if args else kwargs["hidden_states"]
        store["layer_0"] = h.detach().to("cpu", torch.float32).clone()

    handles.append(adapter.blocks[0].register_forward_pre_hook(save_pre, with_kwargs=True))
    for l in range(1, adapter.num_layers + 1):
        handles.append(adapter.block(l).register_forward_hook(save(f"layer_{l}")))
        for kind, role in (("attn_input", "ln1"), ("attn", "attn_write"), ("ffn_input", "ln2"), ("ffn", "ffn_write")):
            handles.append(adapter.module(l, role).register_forward_hook(save(f"{kind}_{l}")))
    try:
        model(input_ids=input_ids)  # the full model, lm_head included, as the script does
    finally:
        for h in handles:
            h.remove()
    weight = adapter.unembed_weight.float().cpu()
    out: dict[str, torch.Tensor] = {}
    for name, act in store.items():
        logits = act[0, positions] @ weight.T  # [R, N] for all response positions at once
        probs = torch.softmax(logits, dim=-1)
        out[name] = -(probs * torch.log(probs + 1e-12)).sum(-1)
    return out


@torch.no_grad()
def our_entropies(
    model, adapter: ArchitectureAdapter, input_ids: torch.Tensor, positions: torch.Tensor, chunk_mib: float
) -> dict:
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    mask[0, positions] = True
    st = internal_policy_statistics(
        model, input_ids, positions=mask, adapter=adapter, config=LensConfig(chunk_mib=chunk_mib, with_logprobs=False)
    )
    out = {}
    for kind, rows in st.entropy.items():
        first = 0 if kind == "layer" else 1
        for r in range(rows.shape[0]):
            out[f"{kind}_{r + first}"] = rows[r]
    return out


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--task", default="chain_sum")
    ap.add_argument("--min-tokens", type=int, default=2000, help="analyse at least this many response tokens")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8, help="prompts sampled per generation call")
    ap.add_argument("--chunk-mib", type=float, default=16.0, help="our chunk budget for [tokens, vocab] logits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--responses-cache",
        default=None,
        help="JSON file to reuse (or save) the sampled token ids, so a rerun skips generation",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "lens_memory.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model, tok = load_model(args.model, device="cpu", dtype=torch.float32)
    model.eval()
    adapter = ArchitectureAdapter(model)

    # 1. the model's own sampled responses (seeded), until there are enough response tokens
    t0 = time.perf_counter()
    prompt_ids: list[list[int]] = []
    response_ids: list[list[int]] = []
    cache = Path(args.responses_cache) if args.responses_cache else None
    if cache is not None and cache.exists():
        saved = json.loads(cache.read_text())
        prompt_ids, response_ids = saved["prompt_ids"], saved["response_ids"]
        print(f"reusing {len(response_ids)} sampled responses from {cache}", flush=True)
    round_ = 0
    while sum(len(r) for r in response_ids) < args.min_tokens:
        prompts = task_prompts(args.task, args.batch, seed=args.seed + 1000 * round_, style="boxed")
        roll = generate(
            model,
            tok,
            prompts,
            config=SamplingConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch),
            seed=args.seed + round_,
        )
        prompt_ids += roll.prompt_ids
        response_ids += roll.response_ids
        round_ += 1
        print(f"sampled {len(response_ids)} responses, {sum(len(r) for r in response_ids)} tokens", flush=True)
    gen_s = time.perf_counter() - t0
    if cache is not None and not cache.exists():
        cache.write_text(json.dumps({"prompt_ids": prompt_ids, "response_ids": response_ids}))

    # 2. interleaved measurement, one sequence at a time
    probe_method = PeakRSS().method
    res = {
        "reference": {"time_s": 0.0, "extra_mib": 0.0, "peak_rss_mib": 0.0, "rss_before_mib": []},
        "ours": {"time_s": 0.0, "extra_mib": 0.0, "peak_rss_mib": 0.0, "rss_before_mib": []},
    }
    sums = {"reference": {}, "ours": {}}
    n_tokens = 0
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        batch = pack_sequences([p], [r], tok.pad_token_id)
        positions = batch.prediction_mask[0].nonzero().squeeze(-1)
        n_tokens += len(positions)
        order = ("reference", "ours") if i % 2 == 0 else ("ours", "reference")
        for side in order:
            with PeakRSS() as mem:
                t = time.perf_counter()
                if side == "reference":
                    ent = reference_entropies(model, adapter, batch.input_ids, positions)
                else:
                    ent = our_entropies(model, adapter, batch.input_ids, positions, args.chunk_mib)
                dt = time.perf_counter() - t
            res[side]["time_s"] += dt
            res[side]["extra_mib"] = max(res[side]["extra_mib"], mem.peak - mem.before)
            res[side]["peak_rss_mib"] = max(res[side]["peak_rss_mib"], mem.peak)
            res[side]["rss_before_mib"].append(round(mem.before, 1))
            for k, v in ent.items():
                sums[side][k] = sums[side].get(k, 0.0) + float(v.double().sum())
            del ent
        print(
            f"seq {i + 1}/{len(prompt_ids)}: {len(positions)} tokens; ref {res['reference']['time_s']:.1f}s "
            f"{res['reference']['extra_mib']:.0f} MiB, ours {res['ours']['time_s']:.1f}s {res['ours']['extra_mib']:.0f} MiB",
            flush=True,
        )

    max_diff = max(abs(sums["reference"][k] - sums["ours"][k]) / n_tokens for k in sums["reference"])
    for side in res:
        befores = res[side].pop("rss_before_mib")
        res[side]["rss_before_min_mib"] = min(befores)
        res[side]["rss_before_max_mib"] = max(befores)
        res[side] = {k: round(v, 3) for k, v in res[side].items()}
    result = {
        "benchmark": "internal-policy entropy of every layer and module at all response positions",
        "model": args.model,
        "num_layers": adapter.num_layers,
        "vocab_size": adapter.vocab_size,
        "num_sequences": len(prompt_ids),
        "num_response_tokens": n_tokens,
        "projected_vectors_per_token": 5 * adapter.num_layers + 1,
        "dtype": "float32",
        "task": args.task,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "our_chunk_mib": args.chunk_mib,
        "reference": res["reference"],
        "ours": res["ours"],
        "peak_mem_ratio_reference_over_ours": round(
            res["reference"]["extra_mib"] / max(res["ours"]["extra_mib"], 1e-9), 3
        ),
        "peak_rss_ratio_reference_over_ours": round(res["reference"]["peak_rss_mib"] / res["ours"]["peak_rss_mib"], 3),
        "time_ratio_reference_over_ours": round(res["reference"]["time_s"] / res["ours"]["time_s"], 3),
        "max_abs_diff_mean_entropy_nats": max_diff,
        "generation_s": round(gen_s, 1),
        "memory_measure": f"{probe_method}; glibc mmap threshold 64 KiB and malloc_trim before each run; "
        "extra = peak RSS during one sequence's statistics minus RSS just before "
        "(the model's weights are excluded); peak_rss = the raw process peak RSS",
        "timing": "sum over sequences of wall time, sides interleaved one sequence at a time, order alternating",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "note": "shared 2-core machine with other jobs running; ratios are measured side by side",
        },
        "command": "python bench/lens_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "num_response_tokens",
                    "peak_mem_ratio_reference_over_ours",
                    "time_ratio_reference_over_ours",
                    "max_abs_diff_mean_entropy_nats",
                )
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
