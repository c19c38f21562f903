"""Shared fixtures: tiny random-weight models of every family, and the embedded model (session-scoped)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bupo_core.models import TINY_FAMILIES, tiny_model

# 2 threads by default; `make test-1thread` (BUPO_TEST_THREADS=1) runs the suite once with one thread, which
# changes the order of float sums and so catches a test that relies on one machine's rounding (docs/testing.md)
torch.set_num_threads(int(os.environ.get("BUPO_TEST_THREADS", "2")))


@pytest.fixture(params=TINY_FAMILIES)
def tiny(request):
    """A tiny random-weight model of each supported family (vocab 128, 2 layers, hidden 64)."""
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M-Instruct and its tokenizer (float32, CPU), loaded once."""
    from bupo_core import load_model

    return load_model("smollm2-135m-instruct", device="cpu")


@pytest.fixture(scope="session")
def tiny_llm():
    """``tiny-random-llama`` with the embedded tokenizer: fast end-to-end tests of pipelines."""
    from bupo_core import load_model

    return load_model("tiny-random-llama", device="cpu")


def write_fake_sweep(res: Path, *, with_metrics: bool = True) -> Path:
    """A finished 2-arm x 3-seed sweep under ``res/`` (``specs/main.json``, ``main/``), written by hand:
    grpo Avg@K 0.5 / 0.4 / 0.6, bupo_l1 0.25 / 0.30 / 0.20; per-step metrics files when ``with_metrics``."""
    import json

    from bupo_core.sweep import cell_key, parse_spec, spec_to_json, write_summary

    (res / "specs").mkdir(parents=True)
    spec_data = {
        "name": "main",
        "description": "fake",
        "shared": {"model": "tiny-random-llama", "steps": 4, "inter_steps": 2},
        "seeds": [0, 1, 2],
        "control": "grpo",
        "eval": {"num_problems": 4, "k": 4},
        "arms": [
            {"name": "grpo", "config": {"method": "grpo"}, "paper": "baseline", "group": "main"},
            {
                "name": "bupo_l1",
                "config": {"method": "bupo", "layer": 1},
                "paper": "Table 1: BuPO beats GRPO",
                "group": "main",
            },
        ],
    }
    (res / "specs" / "main.json").write_text(json.dumps(spec_data))
    spec = parse_spec(spec_data, "main.json")
    out = res / "main"
    out.mkdir()
    (out / "spec.json").write_text(json.dumps(spec_to_json(spec)))
    vals = {"grpo": [0.5, 0.4, 0.6], "bupo_l1": [0.25, 0.30, 0.20]}
    with open(out / "cells.jsonl", "w") as f:
        for arm, vs in vals.items():
            for seed, v in enumerate(vs):
                rewards = [0.1, 0.2, 0.3, 0.4] if arm == "grpo" else [0.2, 0.1, 0.2, 0.3]
                f.write(
                    json.dumps(
                        {
                            "arm": arm,
                            "seed": seed,
                            "key": cell_key(spec, spec.arm(arm), seed),
                            "metrics": {
                                "avg_at_k": v,
                                "pass_at_k": v + 0.2,
                                "no_answer_rate": 0.1,
                                "accuracy_among_answered": v / 0.9,
                                "k": 4,
                            },
                            "train_rewards": rewards,
                            "inter_steps": 2 if arm == "bupo_l1" else 0,
                            "wall_s": {"total": 60.0, "train": 50.0, "eval": 10.0},
                        }
                    )
                    + "\n"
                )
                if with_metrics:
                    run = out / "cells" / arm / f"seed-{seed}" / "run"
                    run.mkdir(parents=True)
                    with open(run / "metrics.jsonl", "w") as m:
                        for step, r in enumerate(rewards, 1):
                            internal = arm == "bupo_l1" and step <= 2
                            m.write(
                                json.dumps(
                                    {
                                        "step": step,
                                        "reward_mean": r,
                                        "phase": "internal" if internal else "full",
                                        "internal_logprob": (-3.0 + step + seed) if internal else None,
                                        "zero_adv_group_frac": 0.25 * step if arm == "grpo" else 0.5,
                                    }
                                )
                                + "\n"
                            )
    write_summary(spec, out)
    return res


def write_matched_sweep(res: Path, *, spec_extra: dict | None = None, name: str = "matched") -> Path:
    """A finished sweep under ``res/`` (``specs/matched.json``, ``matched/``), written by hand, for issue 20's
    summary fields: ``grpo`` (4 full-policy steps, seeds 0-3), ``grpo_2`` (2 steps: ``bupo_l1``'s matched control),
    ``bupo_l1`` (2 internal + 2 full steps, seeds 0-3; seed 2 makes no IPA update) and ``bupo_l1_s1`` (1 internal
    step, seeds 0-1: another seed set, no matched control). Metrics rows log ``ipa_updates``, ``prompts_drawn``
    and ``prompts_kept``."""
    import json

    from bupo_core.sweep import cell_key, parse_spec, spec_to_json, write_summary

    (res / "specs").mkdir(parents=True, exist_ok=True)
    spec_data = {
        "name": name,
        "description": "fake matched",
        "shared": {"model": "tiny-random-llama", "steps": 4, "inter_steps": 2, **(spec_extra or {})},
        "seeds": [0, 1, 2, 3],
        "control": "grpo",
        "eval": {"num_problems": 4, "k": 4},
        "arms": [
            {"name": "grpo", "config": {"method": "grpo"}, "group": "g"},
            {"name": "grpo_2", "config": {"method": "grpo", "steps": 2}, "group": "g"},
            {"name": "bupo_l1", "config": {"method": "bupo", "layer": 1}, "group": "g"},
            {
                "name": "bupo_l1_s1",
                "config": {"method": "bupo", "layer": 1, "inter_steps": 1},
                "seeds": [0, 1],
                "group": "g",
            },
        ],
    }
    (res / "specs" / f"{name}.json").write_text(json.dumps(spec_data))
    spec = parse_spec(spec_data, f"{name}.json")
    out = res / name
    out.mkdir()
    (out / "spec.json").write_text(json.dumps(spec_to_json(spec)))
    vals = {
        "grpo": [0.50, 0.40, 0.60, 0.30],
        "grpo_2": [0.45, 0.30, 0.50, 0.35],
        "bupo_l1": [0.25, 0.30, 0.20, 0.40],
        "bupo_l1_s1": [0.10, 0.90],
    }
    with open(out / "cells.jsonl", "w") as f:
        for arm, vs in vals.items():
            a = spec.arm(arm)
            cfg = spec.train_config(a, 0, "unused")
            inter = cfg.inter_steps if cfg.method == "bupo" else 0
            for seed, v in zip(a.seeds, vs):
                rewards = [0.1 * (i + 1) + 0.01 * seed for i in range(cfg.steps)]
                f.write(
                    json.dumps(
                        {
                            "arm": arm,
                            "seed": seed,
                            "key": cell_key(spec, a, seed),
                            "metrics": {
                                "avg_at_k": v,
                                "pass_at_k": min(1.0, v + 0.2),
                                "no_answer_rate": 0.1,
                                "accuracy_among_answered": v / 0.9,
                                "k": 4,
                            },
                            "train_rewards": rewards,
                            "inter_steps": inter,
                            "wall_s": {"total": 30.0, "train": 25.0, "eval": 5.0},
                        }
                    )
                    + "\n"
                )
                run = out / "cells" / arm / f"seed-{seed}" / "run"
                run.mkdir(parents=True)
                with open(run / "metrics.jsonl", "w") as m:
                    for step, r in enumerate(rewards, 1):
                        internal = step <= inter
                        ipa = (0 if (arm == "bupo_l1" and seed == 2) else 1) if internal else 0
                        m.write(
                            json.dumps(
                                {
                                    "step": step,
                                    "reward_mean": r,
                                    "phase": "internal" if internal else "full",
                                    "updates": 1,
                                    "ipa_updates": ipa,
                                    "prompts_drawn": 6 + step,
                                    "prompts_kept": 4,
                                    "zero_adv_group_frac": 0.0,
                                }
                            )
                            + "\n"
                        )
    write_summary(spec, out)
    return res
