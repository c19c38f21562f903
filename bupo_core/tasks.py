"""Tasks with verifiable answers behind one interface, and the prompt templates that pose them.

Sources (:func:`load_task`):

* reasoning-gym generators (offline): ``chain_sum``, ``basic_arithmetic``, ``simple_equations``,
  ``gsm_symbolic`` (and any other reasoning-gym dataset name), with their config keywords, e.g.
  ``load_task("chain_sum", min_terms=2, max_terms=2, min_digits=1, max_digits=1)``;
* local JSONL files with one ``{"question": ..., "answer": ...}`` object per line
  (``load_task("path/to/file.jsonl")``); a malformed line raises with its line number;
* hub datasets when online (through ``datasets``), each a named split (:data:`HUB_TASKS`):
  training splits ``gsm8k`` (GSM8K train), ``deepmath`` (DeepMath-103K, the paper's data),
  ``math-train`` (MATH train, disjoint from MATH500); test sets ``math500``, ``aime24``, ``aime25``,
  ``amc23``, ``gsm8k-test``, which training refuses (:func:`check_training_task`) unless asked.
  Offline they raise :class:`~bupo_core.errors.ModelNotAvailableError` naming the offline tasks.

Templates (:data:`TEMPLATES`) turn a question into chat messages:

* ``"short"``: the question + " Reply with just the number." - the style the embedded 135M model
  can follow; the answer is the last number of the reply.
* ``"boxed"``: the paper's system prompt "Please reason step by step, and put your final answer
  within \\boxed{}."; the answer is the last ``\\boxed{}``.
* ``"qwen3-boxed"``: the same for Qwen3 without thinking (``enable_thinking=False`` passed to the
  chat template).
* ``"plain"``: the question alone as a user message.

These are the only prompt templates: the entropy analysis' prompt styles
(:func:`bupo_core.analysis.style_prompt`) are the same objects.

A :class:`Task` is a finite list of examples, iterated in a seeded order; the *data position*
(how many prompts were consumed) is all a resumed run needs to continue with the same prompts.

Held-out splits (``load_task(..., split="train" | "eval")``): the space of *questions* is
partitioned deterministically by a hash of each question's key (:func:`question_key`: the sorted
tokens of the arithmetic expression for reasoning-gym arithmetic, so ``3 + 4``, ``4 + 3``,
``4 - 3`` and ``3 - 4`` share one key and one split; the normalised text otherwise).
:data:`EVAL_FRACTION` of the keys belong to ``"eval"``, the rest to ``"train"``, whatever the
seed or size, so no question of an evaluation set can occur in any training set. Use a task with
thousands of distinct questions (:data:`HELD_OUT_CHAIN_SUM`); :data:`EASY_CHAIN_SUM` has only 200.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputFormatError, ModelNotAvailableError
from .rewards import check_reasoning_gym_scorer, extract_boxed
from .runs import iter_jsonl

# The two-term single-digit chain_sum: the easiest setting on which the 135M embedded model earns
# reward in most groups of 8 (about 14% pass rate), used as the default for CPU training and demos.
EASY_CHAIN_SUM = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
# chain_sum with 2 or 3 single-digit terms: 4,200 distinct questions (3,457 in the train split, 743 in
# eval), the task with a held-out evaluation split. Chosen by bench/task_pass_rate.py (rule: among
# candidates with >= 1000 distinct questions, the most mixed groups of 8 on the embedded model;
# measured numbers in bench/results/task_pass_rate.json and on docs/results.md).
HELD_OUT_CHAIN_SUM = {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}
SPLITS = ("train", "eval")
EVAL_FRACTION = 0.2
PAPER_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
SHORT_SUFFIX = " Reply with just the number."


@dataclass(frozen=True)
class PromptTemplate:
    """How a question becomes a chat prompt, and where the answer is read from.

    Attributes:
        name: template name.
        system: system message (``None`` for none).
        suffix: text appended to the question.
        answer_format: ``"last_number"`` or ``"boxed"``: what the reward extracts.
        chat_template_kwargs: passed to the tokenizer's chat template (Qwen3: no thinking).
    """

    name: str
    system: str | None
    suffix: str
    answer_format: str
    chat_template_kwargs: dict = field(default_factory=dict)

    def messages(self, question: str) -> list[dict[str, str]]:
        """Chat messages for ``question``."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": question + self.suffix}]


TEMPLATES: dict[str, PromptTemplate] = {
    "short": PromptTemplate("short", None, SHORT_SUFFIX, "last_number"),
    "boxed": PromptTemplate("boxed", PAPER_SYSTEM_PROMPT, "", "boxed"),
    "qwen3-boxed": PromptTemplate("qwen3-boxed", PAPER_SYSTEM_PROMPT, "", "boxed", {"enable_thinking": False}),
    "plain": PromptTemplate("plain", None, "", "last_number"),
}


@dataclass
class Example:
    """One question with its reference answer.

    Attributes:
        question: the problem text.
        answer: the reference answer (a number or a LaTeX expression), as a string.
        answer_format: ``"last_number"`` or ``"boxed"`` (copied from the template).
        entry: the raw reasoning-gym row (``None`` for other sources).
        dataset: the reasoning-gym dataset object whose ``score_answer`` grades it.
        source: where it came from (``"reasoning_gym:chain_sum:3"``, ``"jsonl:path/file.jsonl:12"``...).
    """

    question: str
    answer: str
    answer_format: str = "last_number"
    entry: dict | None = None
    dataset: Any = None
    source: str = ""


REASONING_GYM_TASKS = ("chain_sum", "basic_arithmetic", "simple_equations", "gsm_symbolic")


@dataclass(frozen=True)
class HubTask:
    """A Hugging Face dataset split served as a task (needs network the first time).

    Attributes:
        repo: dataset repository.
        subset: configuration name, or ``None``.
        split: the split loaded (named, never guessed).
        role: ``"train"`` (a training split) or ``"test"`` (an evaluation set: never train on it).
        question: column holding the problem.
        answer: column holding the reference answer (``"solution"`` for MATH, whose answer is the
            solution's last ``\\boxed{}``; GSM8K's is after ``####``).
        train_instead: for a test set, the training task to use instead.
    """

    repo: str
    subset: str | None
    split: str
    role: str
    question: str
    answer: str
    train_instead: str | None = None


# Training splits train, test sets evaluate. MATH500 is drawn from the MATH test split, so the MATH
# training split (math-train) is disjoint from it; the paper trains on 5k DeepMath-103K prompts.
HUB_TASKS: dict[str, HubTask] = {
    "gsm8k": HubTask("openai/gsm8k", "main", "train", "train", "question", "answer"),
    "deepmath": HubTask("zwhe99/DeepMath-103K", None, "train", "train", "question", "final_answer"),
    "math-train": HubTask("DigitalLearningGmbH/MATH-lighteval", "default", "train", "train", "problem", "solution"),
    "gsm8k-test": HubTask("openai/gsm8k", "main", "test", "test", "question", "answer", train_instead="gsm8k"),
    "math500": HubTask(
        "HuggingFaceH4/MATH-500",
        None,
        "test",
        "test",
        "problem",
        "answer",
        train_instead="deepmath (the paper's data) or math-train",
    ),
    "aime24": HubTask("HuggingFaceH4/aime_2024", None, "train", "test", "problem", "answer", train_instead="deepmath"),
    "aime25": HubTask("math-ai/aime25", None, "test", "test", "problem", "answer", train_instead="deepmath"),
    "amc23": HubTask("math-ai/amc23", None, "test", "test", "question", "answer", train_instead="deepmath"),
}


def is_test_set(name: str) -> bool:
    """True for tasks that are evaluation sets (MATH500, AIME, AMC, the GSM8K test split).

    >>> is_test_set("math500"), is_test_set("gsm8k"), is_test_set("chain_sum")
    (True, False, False)
    """
    task = HUB_TASKS.get(str(name))
    return task is not None and task.role == "test"


def check_training_task(name: str, allow_test_set_training: bool = False) -> None:
    """Refuse to train on a known test set (offline: nothing is downloaded).

    Raises:
        InputFormatError: ``name`` is a test set and ``allow_test_set_training`` is False; the
            message names the training split to use instead.
    """
    if is_test_set(name) and not allow_test_set_training:
        t = HUB_TASKS[name]
        raise InputFormatError(
            f"task {name!r} is a test set ({t.repo}, split {t.split!r}): training on it makes every later evaluation on it "
            f"meaningless. Train on {t.train_instead} instead (a training split) and evaluate on {name!r}; if you really "
            f"mean to train on it, pass allow_test_set_training=True (--allow-test-set-training)."
        )


@dataclass
class Task:
    """A finite, seeded sequence of examples plus the template and scorer that go with it.

    Attributes:
        name: task name (as given to :func:`load_task`).
        examples: the examples.
        template: the prompt template.
        scorer: the reward scorer name (see :mod:`bupo_core.rewards`).
        seed: seeds the order in which examples are served (reshuffled every epoch).
        split: ``"train"`` or ``"eval"`` when the examples come from one side of the held-out
            partition (:func:`question_split`), ``None`` when unsplit.
    """

    name: str
    examples: list[Example]
    template: PromptTemplate
    scorer: str
    seed: int = 0
    split: str | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def index_at(self, position: int) -> int:
        """Index of the example served at data position ``position`` (epoch-wise shuffles)."""
        n = len(self.examples)
        epoch, offset = divmod(position, n)
        order = list(range(n))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order[offset]

    def batch(self, position: int, size: int) -> list[Example]:
        """The ``size`` examples served from data position ``position`` on."""
        return [self.examples[self.index_at(position + i)] for i in range(size)]

    def prompt(self, example: Example) -> list[dict[str, str]]:
        """Chat messages that pose ``example``."""
        return self.template.messages(example.question)

    @property
    def chat_template_kwargs(self) -> dict:
        return dict(self.template.chat_template_kwargs)


def known_tasks() -> list[str]:
    """Task names :func:`load_task` accepts (besides ``*.jsonl`` paths and other reasoning-gym names)."""
    return list(REASONING_GYM_TASKS) + list(HUB_TASKS)


def get_template(name: str) -> PromptTemplate:
    """The template called ``name``; unknown names raise with the list."""
    if name not in TEMPLATES:
        raise InputFormatError(f"unknown prompt template {name!r}; use one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def question_key(example: Example) -> str:
    """The key that decides an example's split: equal keys = the same question.

    For reasoning-gym rows with an arithmetic ``expression`` in their metadata: the sorted
    whitespace-separated tokens of the expression (commuted and reversed forms share a key, which
    only makes the held-out split stricter). Otherwise the question, lower-cased, with runs of
    whitespace collapsed.

    >>> question_key(Example("What is 3 + 4 =", "7", entry={"metadata": {"expression": "3 + 4"}}))
    '+ 3 4'
    >>> question_key(Example("  What  is 2+2? ", "4"))
    'what is 2+2?'
    """
    meta = (example.entry or {}).get("metadata") or {}
    expr = meta.get("expression") if isinstance(meta, dict) else None
    if isinstance(expr, str) and expr.strip():
        return " ".join(sorted(expr.split()))
    return re.sub(r"\s+", " ", example.question.strip().lower())


def question_split(example: Example) -> str:
    """``"eval"`` or ``"train"``: the fixed side of the partition :func:`question_key` falls on.

    A SHA-256 hash of the key, so it does not depend on the seed, the size or the Python process.
    """
    digest = hashlib.sha256(question_key(example).encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "eval" if bucket < EVAL_FRACTION else "train"


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise InputFormatError(f"split must be 'train', 'eval' or None (no split), got {split!r}")


def _keep_split(examples: list[Example], split: str | None, name: str) -> list[Example]:
    if split is None:
        return examples
    seen: set[str] = set()
    kept = [e for e in examples if question_split(e) == split and not (e.question in seen or seen.add(e.question))]
    if not kept:
        raise InputFormatError(
            f"task {name!r} has no question in the {split!r} split ({len(examples)} examples, none hash to it); "
            "use a larger task or split=None"
        )
    return kept


def load_task(
    name: str,
    *,
    size: int = 1000,
    seed: int = 0,
    template: str | None = None,
    scorer: str | None = None,
    split: str | None = None,
    **kwargs: Any,
) -> Task:
    """Build a task by name.

    Args:
        name: a reasoning-gym dataset (``chain_sum``...), a path ending in ``.jsonl``, or a hub
            dataset (:data:`HUB_TASKS`: ``gsm8k``, ``deepmath``, ``math-train`` to train;
            ``math500``, ``aime24``, ``aime25``, ``amc23``, ``gsm8k-test`` to evaluate; needs network).
        size: number of examples generated (reasoning-gym) or kept (hub; 0 = all).
        seed: generator seed and serving order.
        template: prompt template; default ``"short"`` for reasoning-gym and JSONL, ``"boxed"`` for hub maths.
        scorer: reward scorer; default ``"reasoning_gym"`` for reasoning-gym tasks, ``"last_number"``
            for the short template, ``"boxed_math"`` for boxed ones.
        split: ``"train"`` or ``"eval"``: keep only questions on that side of the fixed
            partition (:func:`question_split`), each question once; reasoning-gym generators
            draw until ``size`` distinct questions of the split exist (or the split is
            exhausted: then the error names how many exist). ``None`` (default): no split
            (reasoning-gym draws may then repeat a question).
        **kwargs: the reasoning-gym dataset's config fields (``min_terms``, ``max_digits``...), and
            ``pool`` (reasoning-gym with a split): ``"first"`` (default) keeps the first ``size``
            distinct questions in draw order, which over-represents kinds with few distinct
            questions (the 2-3 term chain_sum's two-term questions: 153 of its 3,457 train
            questions, yet 15% of a 1000-question pool, because the generator draws two terms
            half the time); ``"uniform"`` draws the split's distinct questions to exhaustion and
            keeps a seeded uniform sample of ``size`` (0 = all), so every pool of the split (training
            pool, evaluation set, benchmark) has the split's own mix of kinds (:func:`kind_mix`).

    Raises:
        InputFormatError: unknown task (the message lists the known ones), bad keywords, bad file.
        ModelNotAvailableError: a hub dataset while offline.
    """
    if size < 0:
        raise InputFormatError(f"size must be >= 0, got {size}")
    _check_split(split)
    if str(name).endswith(".jsonl"):
        tpl = get_template(template or "short")
        examples = _keep_split(read_jsonl(name, tpl.answer_format), split, str(name))
        return Task(str(name), examples, tpl, scorer or _default_scorer(tpl), seed, split)
    if name in HUB_TASKS:
        tpl = get_template(template or "boxed")
        examples = _keep_split(_load_hub(name, size, tpl.answer_format), split, name)
        return Task(name, examples, tpl, scorer or _default_scorer(tpl), seed, split)
    try:
        from reasoning_gym.factory import DATASETS  # noqa: PLC0415  (optional: slow to import, absent on a bare GPU machine)

        registered = set(DATASETS)
    except ImportError:  # pragma: no cover
        registered = set(REASONING_GYM_TASKS)
    if name not in registered:
        raise InputFormatError(
            f"unknown task {name!r}. Known tasks: {', '.join(known_tasks())}; any reasoning-gym "
            f'dataset name; or a local file ending in .jsonl with one {{"question", "answer"}} object per line.'
        )
    tpl = get_template(template or "short")
    if (scorer or "reasoning_gym") == "reasoning_gym":
        check_reasoning_gym_scorer(name)
    pool = kwargs.pop("pool", "first")
    if pool not in POOLS:
        raise InputFormatError(f"pool must be one of {', '.join(POOLS)}, got {pool!r} (see bupo_core.tasks.load_task)")
    if pool == "uniform" and split is None:
        raise InputFormatError(
            "pool='uniform' samples the distinct questions of a split: give split='train' or split='eval'"
        )
    if split is None:
        want = max(size, 1)
        ds = reasoning_gym_dataset(name, size=want, seed=seed, **kwargs)
        examples = [_rg_example(ds, i, name, tpl) for i in range(want)]
        return Task(name, examples, tpl, scorer or "reasoning_gym", seed, split)
    # rows are made on access from (seed, index), so one large generator serves every draw count
    ds = reasoning_gym_dataset(name, size=MAX_DRAWS, seed=seed, **kwargs)
    want = max(size, 1) if pool == "first" else size
    examples, draws, exhausted = _distinct_split_questions(ds, name, tpl, split, None if pool == "uniform" else want)
    if pool == "uniform":
        random.Random(seed).shuffle(examples)  # a uniform sample of the split's distinct questions
        if want:
            examples = examples[:want]
    if len(examples) < max(want, 1):
        why = "the split holds no more distinct questions" if exhausted else f"stopped after {MAX_DRAWS} draws"
        raise InputFormatError(
            f"reasoning-gym task {name!r} has only {len(examples)} distinct questions in the {split!r} split ({why}; "
            f"{draws} draws), fewer than size={want}; lower size to at most {len(examples)} or widen the task (e.g. max_digits=2)"
        )
    return Task(name, examples, tpl, scorer or "reasoning_gym", seed, split)


POOLS = ("first", "uniform")
MAX_DRAWS = 5_000_000
MIN_QUIET_DRAWS = 20_000


def _rg_example(ds: Any, i: int, name: str, tpl: PromptTemplate) -> Example:
    e = ds[i]
    return Example(
        question=e["question"],
        answer=str(e["answer"]),
        answer_format=tpl.answer_format,
        entry=e,
        dataset=ds,
        source=f"reasoning_gym:{name}:{i}",
    )


def _distinct_split_questions(
    ds: Any, name: str, tpl: PromptTemplate, split: str, want: int | None
) -> tuple[list[Example], int, bool]:
    """The distinct questions of ``split`` in draw order: the first ``want`` (``None``: all of them).

    Draws until ``want`` are found or the generator is exhausted: no new question of *either*
    split in the last ``max(MIN_QUIET_DRAWS, 2 x draws so far at the last new one)`` draws (a
    question drawn with probability ``p`` per draw is missed with probability ``exp(-p x quiet)``;
    the 2-3 term single-digit chain_sum's rarest question, ``p = 1/8000``, is found within 50,000
    draws). Returns ``(examples, draws, exhausted)``.
    """
    examples: list[Example] = []
    seen: set[str] = set()
    last_new = 0
    i = 0
    while i < MAX_DRAWS:
        e = ds[i]
        q = e["question"]
        i += 1
        if q in seen:
            if i - last_new >= max(MIN_QUIET_DRAWS, 2 * last_new):
                return examples, i, True
            continue
        seen.add(q)
        last_new = i
        ex = Example(
            question=q,
            answer=str(e["answer"]),
            answer_format=tpl.answer_format,
            entry=e,
            dataset=ds,
            source=f"reasoning_gym:{name}:{i - 1}",
        )
        if question_split(ex) == split:
            examples.append(ex)
            if want is not None and len(examples) == want:
                return examples, i, False
    return examples, i, False


def question_kind(example: Example) -> str:
    """The kind of a question, for comparing the mix of pools: ``"2 terms"``, ``"3 terms"`` for
    reasoning-gym arithmetic (its ``num_terms``), else ``"other"``.

    >>> question_kind(Example("1 + 2 =", "3", entry={"metadata": {"num_terms": 2}}))
    '2 terms'
    """
    meta = (example.entry or {}).get("metadata") or {}
    n = meta.get("num_terms") if isinstance(meta, dict) else None
    return f"{n} terms" if n is not None else "other"


def kind_mix(examples: list[Example]) -> dict[str, float]:
    """Share of each :func:`question_kind` among ``examples`` (sorted by kind).

    >>> kind_mix([Example("a", "1", entry={"metadata": {"num_terms": 2}}), Example("b", "1", entry={"metadata": {"num_terms": 3}})])
    {'2 terms': 0.5, '3 terms': 0.5}
    """
    counts: dict[str, int] = {}
    for e in examples:
        k = question_kind(e)
        counts[k] = counts.get(k, 0) + 1
    return {k: counts[k] / len(examples) for k in sorted(counts)} if examples else {}


def reasoning_gym_entries(name: str, *, size: int, seed: int, **kwargs: Any) -> tuple[Any, list[dict]]:
    """``(dataset, rows)`` of a reasoning-gym generator (see :func:`reasoning_gym_dataset`)."""
    ds = reasoning_gym_dataset(name, size=size, seed=seed, **kwargs)
    return ds, [ds[i] for i in range(size)]


def reasoning_gym_dataset(name: str, *, size: int, seed: int, **kwargs: Any) -> Any:
    """A reasoning-gym generator (rows are made on access); its own errors about settings become
    :class:`InputFormatError` naming the task and the settings (e.g. ``min_terms > max_terms``)."""
    import reasoning_gym as rg  # noqa: PLC0415  (optional: slow to import, absent on a bare GPU machine)

    settings = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "the defaults"
    try:
        ds = rg.create_dataset(name, size=size, seed=seed, **kwargs)
        ds[0]  # generators check some settings only when a row is made
        return ds
    except TypeError as exc:
        raise InputFormatError(
            f"bad settings for reasoning-gym task {name!r} ({settings}): {exc}. Check the keyword names of its config class."
        ) from exc
    except (ValueError, AssertionError, KeyError, IndexError, ZeroDivisionError) as exc:
        raise InputFormatError(
            f"bad settings for reasoning-gym task {name!r} ({settings}): {exc or type(exc).__name__}; "
            "fix the contradictory or out-of-range setting"
        ) from exc


def _default_scorer(tpl: PromptTemplate) -> str:
    return "boxed_math" if tpl.answer_format == "boxed" else "last_number"


def read_jsonl(path: str | Path, answer_format: str = "last_number") -> list[Example]:
    """Examples from a JSONL file of ``{"question": str, "answer": str|number}`` objects.

    Blank lines are skipped. Raises :class:`InputFormatError` naming the file and line number of
    the first malformed line.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputFormatError(
            f'task file {p} does not exist; give a path to a .jsonl file with one {{"question", "answer"}} object per line'
        )
    out: list[Example] = []
    for lineno, obj in iter_jsonl(p, what="task file"):
        if not isinstance(obj, dict):
            raise InputFormatError(
                f'{p}:{lineno}: expected a JSON object with "question" and "answer", got {type(obj).__name__}'
            )
        missing = [k for k in ("question", "answer") if k not in obj]
        if missing:
            raise InputFormatError(
                f'{p}:{lineno}: missing key(s) {", ".join(missing)}; each line needs "question" and "answer"'
            )
        if not isinstance(obj["question"], str) or not obj["question"].strip():
            raise InputFormatError(f'{p}:{lineno}: "question" must be a non-empty string')
        if not isinstance(obj["answer"], (str, int, float)) or isinstance(obj["answer"], bool):
            raise InputFormatError(
                f'{p}:{lineno}: "answer" must be a string or a number, got {type(obj["answer"]).__name__}'
            )
        if isinstance(obj["answer"], float) and not math.isfinite(obj["answer"]):
            raise InputFormatError(
                f'{p}:{lineno}: "answer" is {obj["answer"]}; give the reference answer as a finite number or a string'
            )
        if not str(obj["answer"]).strip():
            raise InputFormatError(f'{p}:{lineno}: "answer" is empty; every example needs its reference answer')
        out.append(Example(obj["question"], str(obj["answer"]), answer_format, source=f"jsonl:{p}:{lineno}"))
    if not out:
        raise InputFormatError(f'{p} holds no examples; add lines like {{"question": "2+2?", "answer": "4"}}')
    return out


def _gsm8k_answer(solution: str) -> str:
    return solution.split("####")[-1].strip().replace(",", "")


def _load_hub(name: str, size: int, answer_format: str) -> list[Example]:
    t = HUB_TASKS[name]
    repo = t.repo
    try:
        import datasets  # noqa: PLC0415  (optional: datasets, the hub extra, only for hub tasks)

        ds = datasets.load_dataset(repo, t.subset, split=t.split)
    except Exception as exc:  # noqa: BLE001 - offline shows up as many exception types
        raise ModelNotAvailableError(
            f"cannot load the hub dataset {repo!r} for task {name!r}: the Hugging Face hub is not "
            f"reachable from here (offline?) ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}). "
            f"Offline, use a reasoning-gym task ({', '.join(REASONING_GYM_TASKS)}) or a local .jsonl file of question/answer pairs."
        ) from exc
    out: list[Example] = []
    for i, row in enumerate(ds):
        if size and i >= size:
            break
        q, a = row[t.question], row[t.answer]
        if repo == "openai/gsm8k":
            a = _gsm8k_answer(a)
        elif t.answer == "solution":
            a = extract_boxed(a)
            if a is None:
                continue
        out.append(Example(q, str(a), answer_format, source=f"hub:{repo}:{t.split}:{i}"))
    return out


def chain_sum_questions(kw: dict) -> list[str]:
    """Every chain_sum expression the settings (``min_terms``, ``max_terms``, ``min_digits``, ``max_digits``) can generate.

    >>> len(chain_sum_questions(HELD_OUT_CHAIN_SUM)), len(chain_sum_questions(EASY_CHAIN_SUM))
    (4200, 200)
    """
    out = []
    for terms in range(kw["min_terms"], kw["max_terms"] + 1):
        for digits in range(kw["min_digits"], kw["max_digits"] + 1):
            lo, hi = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1
            for values in itertools.product(range(lo, hi + 1), repeat=terms):
                for ops in itertools.product("+-", repeat=terms - 1):
                    parts = [str(values[0])]
                    for op, v in zip(ops, values[1:]):
                        parts += [op, str(v)]
                    out.append(" ".join(parts))
    return out


def chain_sum_split_counts(kw: dict) -> dict[str, dict[str, int]]:
    """Distinct chain_sum questions per split and kind (exact enumeration): ``{"train": {"2 terms": n, ...}, "eval": {...}}``.

    >>> chain_sum_split_counts(HELD_OUT_CHAIN_SUM)["eval"]
    {'2 terms': 46, '3 terms': 697}
    """
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for q in chain_sum_questions(kw):
        side = question_split(Example("", "", entry={"metadata": {"expression": q}}))
        kind = f"{len(q.split()) // 2 + 1} terms"
        counts[side][kind] = counts[side].get(kind, 0) + 1
    return {s: {k: c[k] for k in sorted(c)} for s, c in counts.items()}
