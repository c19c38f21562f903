"""Evaluation: Avg@K and Pass@k with the unbiased estimator, error bars, and an evaluator.

Definitions (paper section 5 and Chen et al. 2021):

* For one problem with ``n`` sampled responses of which ``c`` are correct,
  ``pass@k = 1 - C(n - c, k) / C(n, k)`` for ``k <= n``: the probability that at least one of ``k``
  responses drawn without replacement from the ``n`` is correct. It is unbiased for the pass rate of
  ``k`` fresh samples. ``k > n`` is rejected.
* ``Avg@K`` is the mean pass rate ``c / n`` with ``n = K`` samples per problem (= pass@1).
* Task-level numbers are means over problems; error bars are percentile bootstrap intervals over
  problems (resampling problems, not samples, because samples of one problem are correlated).
* Format vs arithmetic: ``no_answer_rate`` is the share of responses with no parseable answer
  (no number for the short template, no ``\\boxed{}`` for the boxed ones);
  ``accuracy_among_answered`` is the share of correct responses among those that do give one.
  ``avg_at_k = (1 - no_answer_rate) * accuracy_among_answered``, so a gain in Avg@K can be told
  apart into learning to print an answer and learning to get it right.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .config_cli import check_seed
from .errors import InputFormatError
from .rewards import Grader, extract_boxed, extract_last_number
from .rollout import SamplingConfig, generate
from .runs import iter_jsonl
from .sampling import MAX_NEW_TOKENS_EVAL, SamplingFields

# ----------------------------------------------------------------------------- pure maths


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem: ``1 - C(n-c, k) / C(n, k)``.

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k / i)`` which avoids huge binomials.

    Args:
        n: samples drawn for the problem.
        c: correct samples among them (0 <= c <= n).
        k: budget, 1 <= k <= n.

    >>> pass_at_k(4, 0, 2), pass_at_k(4, 4, 2), pass_at_k(4, 1, 1), round(pass_at_k(4, 1, 2), 4)
    (0.0, 1.0, 0.25, 0.5)
    """
    if not (isinstance(n, (int, np.integer)) and isinstance(c, (int, np.integer)) and isinstance(k, (int, np.integer))):
        raise TypeError("n, c and k must be integers")
    if n < 1 or k < 1:
        raise ValueError(f"need n >= 1 and k >= 1, got n={n}, k={k}")
    if k > n:
        raise ValueError(
            f"pass@{k} needs at least {k} samples per problem, got n={n}: sample more (--k) or use a smaller k"
        )
    if not 0 <= c <= n:
        raise ValueError(f"correct count c={c} must be in 0..n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_curve(correct: Sequence[int], n: int, ks: Sequence[int] | None = None) -> dict[int, float]:
    """Mean pass@k over problems, for each k in ``ks`` (default 1..n).

    Args:
        correct: per-problem correct counts.
        n: samples per problem (the same for every problem).
    """
    ks = list(ks) if ks is not None else list(range(1, n + 1))
    return {k: float(np.mean([pass_at_k(n, int(c), k) for c in correct])) for k in ks}


def avg_at_k(correct: Sequence[int], n: int) -> float:
    """Mean pass rate over problems: ``mean(c_i / n)`` (Avg@K with K = n)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    return float(np.mean(np.asarray(correct, dtype=float) / n)) if len(correct) else float("nan")


def bootstrap_interval(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-problem ``values``.

    >>> bootstrap_interval([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(resamples, arr.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return (float(lo), float(hi))


# ----------------------------------------------------------------------------- evaluator


@dataclass
class EvalConfig(SamplingFields):
    """Settings of an evaluation run (``max_new_tokens``, ``temperature``, ``top_p``: :class:`~bupo_core.sampling.SamplingFields`).

    Attributes:
        num_problems: held-out problems to evaluate.
        k: samples per problem (K of Avg@K; Pass@k is reported for every k <= K).
        seed: seeds the samples (the problems come from the task, which has its own seed).
        batch_size: rows per generation call.
        confidence: level of the bootstrap intervals.
    """

    max_new_tokens: int = MAX_NEW_TOKENS_EVAL
    num_problems: int = 32
    k: int = 8
    seed: int = 0
    batch_size: int = 64
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.num_problems < 1:
            raise InputFormatError(f"num_problems must be >= 1, got {self.num_problems}")
        if self.k < 1:
            raise InputFormatError(f"k (samples per problem) must be >= 1, got {self.k}")
        self.check_sampling_fields(batch_size=self.batch_size)
        if not 0 < self.confidence < 1:
            raise InputFormatError(f"confidence must be in (0, 1), got {self.confidence}")

        check_seed(self.seed, "seed")


@dataclass
class ProblemResult:
    """One problem: its question, reference answer, and what the K samples did."""

    index: int
    question: str
    answer: str
    num_correct: int
    num_samples: int
    no_answer: int
    mean_length: float
    responses: list[str]
    rewards: list[float]
    num_correct_answered: int | None = None


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate`; ``to_json()`` gives the content of ``eval.json``."""

    model: str
    task: str
    config: EvalConfig
    problems: list[ProblemResult]
    grading: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def correct(self) -> list[int]:
        return [p.num_correct for p in self.problems]

    @property
    def avg_at_k(self) -> float:
        return avg_at_k(self.correct, self.config.k)

    @property
    def pass_at_k(self) -> dict[int, float]:
        return pass_at_k_curve(self.correct, self.config.k)

    def to_json(self) -> dict[str, Any]:
        n = self.config.k
        rates = [c / n for c in self.correct]
        ci = bootstrap_interval(rates, confidence=self.config.confidence, seed=self.config.seed)
        pass_ci = {
            str(k): bootstrap_interval(
                [pass_at_k(n, c, k) for c in self.correct], confidence=self.config.confidence, seed=self.config.seed
            )
            for k in range(1, n + 1)
        }
        total = sum(p.num_samples for p in self.problems)
        answered = total - sum(p.no_answer for p in self.problems)
        correct_answered = sum(
            p.num_correct if p.num_correct_answered is None else p.num_correct_answered for p in self.problems
        )
        return {
            "model": self.model,
            "task": self.task,
            "num_problems": len(self.problems),
            "num_samples": n,
            "avg_at_k": self.avg_at_k,
            "avg_at_k_ci": list(ci),
            "pass_at_k": {str(k): v for k, v in self.pass_at_k.items()},
            "pass_at_k_ci": {k: list(v) for k, v in pass_ci.items()},
            "mean_response_length": float(np.mean([p.mean_length for p in self.problems])),
            "no_answer_rate": sum(p.no_answer for p in self.problems) / max(total, 1),
            "num_answered": answered,
            "accuracy_among_answered": correct_answered / answered if answered else None,
            "grading": self.grading,
            "settings": asdict(self.config),
            "seconds": self.seconds,
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write ``eval.json``, ``per_problem.jsonl`` and ``responses.jsonl`` into ``out_dir``; return the JSON path.

        ``per_problem.jsonl`` is small (one line per problem: ``index``, ``num_correct``,
        ``num_samples``, ``no_answer``, ``num_correct_answered`` and a 12-character hash of the
        question, ``question_sha``), so sweeps commit it and analyses can pair cells by problem;
        ``responses.jsonl`` holds the question, reference answer, sampled texts and rewards.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "eval.json"
        path.write_text(json.dumps(self.to_json(), indent=2))
        with open(out / "per_problem.jsonl", "w") as f:
            for p in self.problems:
                f.write(
                    json.dumps(
                        {
                            "index": p.index,
                            "num_correct": p.num_correct,
                            "num_samples": p.num_samples,
                            "no_answer": p.no_answer,
                            "num_correct_answered": p.num_correct_answered,
                            "question_sha": hashlib.sha256(p.question.encode("utf-8")).hexdigest()[:12],
                        }
                    )
                    + "\n"
                )
        with open(out / "responses.jsonl", "w") as f:
            for p in self.problems:
                f.write(json.dumps(asdict(p)) + "\n")
        return path


def has_answer(text: str, answer_format: str) -> bool:
    """Whether a response contains a parseable final answer in the task's format."""
    try:
        found = extract_boxed(text) if answer_format == "boxed" else extract_last_number(text)
    except Exception:  # noqa: BLE001 - a malformed response simply has no answer
        return False
    return found is not None and str(found).strip() != ""


def evaluate(
    model: Any,
    tokenizer: Any,
    task: Any,
    config: EvalConfig | None = None,
    *,
    model_name: str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Sample ``config.k`` responses to each of ``config.num_problems`` problems and grade them.

    Args:
        model, tokenizer: from :func:`bupo_core.load_model` (a checkpoint folder loads the same way).
        task: a :class:`bupo_core.tasks.Task`; the first ``num_problems`` examples are used in the
            task's stored order, so the same task seed gives the same problems for every model.
        config: sampling and size settings.
        model_name: label stored in the result.
        progress: tqdm bar over problem batches.
    """
    cfg = config or EvalConfig()
    if cfg.num_problems > len(task.examples):
        raise ValueError(
            f"the task has {len(task.examples)} problems, fewer than num_problems={cfg.num_problems}: generate a larger task (size=...)"
        )
    examples = task.examples[: cfg.num_problems]
    grader = Grader(scorer=task.scorer)
    sampling = SamplingConfig(
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.batch_size
    )
    per_batch = max(1, cfg.batch_size // cfg.k)
    t0 = time.time()
    problems: list[ProblemResult] = []
    grading = {"too_long": 0, "timeouts": 0, "errors": 0, "scorer": task.scorer}
    starts = range(0, len(examples), per_batch)
    for start in tqdm(starts, desc="evaluate", disable=not progress, leave=False):
        chunk = examples[start : start + per_batch]
        rollout = generate(
            model,
            tokenizer,
            [task.prompt(e) for e in chunk],
            group_size=cfg.k,
            config=sampling,
            seed=cfg.seed * 1_000_003 + start,
            chat_template_kwargs=task.chat_template_kwargs,
        )
        scored = grader(rollout.texts, [chunk[i] for i in rollout.prompt_index])
        grading["too_long"] += scored.too_long
        grading["timeouts"] += scored.timeouts
        grading["errors"] += scored.errors
        for j, ex in enumerate(chunk):
            rows = range(j * cfg.k, (j + 1) * cfg.k)  # generate() returns prompt-major rows
            texts = [rollout.texts[r] for r in rows]
            rewards = [scored.rewards[r] for r in rows]
            answered = [has_answer(t, ex.answer_format) for t in texts]
            problems.append(
                ProblemResult(
                    index=start + j,
                    question=ex.question,
                    answer=str(ex.answer),
                    num_correct=int(sum(r >= 1.0 for r in rewards)),
                    num_samples=len(rows),
                    no_answer=sum(not a for a in answered),
                    mean_length=float(np.mean([len(rollout.response_ids[r]) for r in rows])),
                    responses=texts,
                    rewards=rewards,
                    num_correct_answered=int(sum(r >= 1.0 and a for r, a in zip(rewards, answered))),
                )
            )
    name = model_name or str(getattr(getattr(model, "config", None), "name_or_path", "model"))
    return EvalResult(
        model=name, task=task.name, config=cfg, problems=problems, grading=grading, seconds=time.time() - t0
    )


def compare(results: dict[str, dict], *, seed: int = 0, resamples: int = 2000) -> dict[str, Any]:
    """Paired bootstrap of the Avg@K difference between runs evaluated on the same problems.

    Args:
        results: label -> a loaded ``eval.json`` *with* its per-problem correct counts under
            ``"correct"`` (as :func:`load_eval` returns).

    Returns:
        For every pair ``"a - b"``: the mean difference and its 95% interval.
    """
    labels = list(results)
    out: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            ra = np.asarray(results[a]["correct"], float) / results[a]["num_samples"]
            rb = np.asarray(results[b]["correct"], float) / results[b]["num_samples"]
            if ra.shape != rb.shape:
                raise ValueError(f"{a} and {b} were evaluated on different numbers of problems")
            d = ra - rb
            idx = rng.integers(0, d.size, size=(resamples, d.size))
            lo, hi = np.quantile(d[idx].mean(axis=1), [0.025, 0.975])
            out[f"{a} - {b}"] = {"mean": float(d.mean()), "ci95": [float(lo), float(hi)]}
    return out


def load_eval(out_dir: str | Path) -> dict[str, Any]:
    """Read ``eval.json`` and add the per-problem correct counts from ``per_problem.jsonl``."""
    out = Path(out_dir)
    data = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    data["correct"] = [
        row["num_correct"] for _, row in iter_jsonl(out / "per_problem.jsonl", what="per-problem results file")
    ]
    return data
