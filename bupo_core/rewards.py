"""Verifiable rewards: answer extraction, equivalence checks and a time-limited, crash-proof grader.

Graders never ``eval`` or ``exec`` model text. Every check runs under a time limit (a SIGALRM
timer on the main thread; a forked worker process elsewhere), and a response that is too long,
makes a checker raise, or runs past the limit scores 0 and is *counted* in
:class:`RewardBatch` - it never stops a training run.

Scorers (``name -> fn(response_text, example) -> float``):

* ``"last_number"``: the last integer or decimal in the reply equals the reference number.
* ``"boxed_math"``: the last ``\\boxed{...}`` equals the reference under ``math-verify``'s
  symbolic equivalence (``1/2`` = ``0.5`` = ``\\frac{1}{2}``); falls back to exact string match
  of normalised text when math-verify cannot parse either side.
* ``"reasoning_gym"``: the task's own ``score_answer`` on the extracted answer (last number for
  the short template, last ``\\boxed{}`` for the boxed ones), only for the reasoning-gym tasks in
  :data:`SAFE_REASONING_GYM_TASKS`. Some reasoning-gym scorers (``string_insertion``,
  ``n_queens``, ``spiral_matrix``...) call ``eval()`` or SymPy's ``parse_expr`` on the answer, so
  model text would run as code; those tasks are refused (use ``last_number`` or ``boxed_math``).
  We chose an allow-list over running them in a worker process: a forked worker has the same
  user, files and network as the trainer, so it limits time, not what the code can do.
  ``tests/test_rewards.py`` re-checks every allow-listed scorer's source (and what it calls)
  with :func:`reasoning_gym_scorer_problems`.

Rewards are binary by default (1.0 when the scorer gives >= ``threshold``, else 0.0).
Register more with :func:`register_scorer`.
"""

from __future__ import annotations

import ast
import inspect
import logging
import math
import multiprocessing as mp
import re
import signal
import textwrap
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import InputFormatError

ScoreFn = Callable[[str, Any], float]

MAX_RESPONSE_CHARS = 20_000
MAX_ANSWER_CHARS = 500
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


# --------------------------------------------------------------------------- extraction
def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced.

    >>> extract_boxed(r"so \\boxed{1} then \\boxed{\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    >>> extract_boxed("no box") is None
    True
    """
    best = None
    for key in ("\\boxed", "\\fbox"):
        idx = text.rfind(key)
        if idx >= 0 and (best is None or idx > best[0]):
            best = (idx, key)
    if best is None:
        return None
    i = best[0] + len(best[1])
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth, start = 0, i + 1
    for j in range(i, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start:j].strip()
    return None


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` (integer or decimal, thousands commas removed), or ``None``.

    >>> extract_last_number("3 + 4 is 7.")
    '7'
    >>> extract_last_number("total: -1,250.5 dollars")
    '-1250.5'
    """
    found = _NUMBER.findall(text)
    if not found:
        return None
    return found[-1].replace(",", "").rstrip(".")


def numbers_equal(a: str | None, b: str | None) -> bool:
    """Exact decimal equality of two number strings (no floats, no ``eval``).

    >>> numbers_equal("7", "7.0"), numbers_equal("-4", "4")
    (True, False)
    """
    if a is None or b is None or len(a) > MAX_ANSWER_CHARS or len(b) > MAX_ANSWER_CHARS:
        return False
    try:
        return Decimal(a.replace(",", "")) == Decimal(b.replace(",", ""))
    except (InvalidOperation, ValueError):
        return False


def _normalise(s: str) -> str:
    s = s.strip().strip("$").replace("\\!", "").replace("\\left", "").replace("\\right", "")
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    return re.sub(r"\s+", "", s).rstrip(".")


def math_equivalent(pred: str | None, gold: str) -> bool:
    """Symbolic equivalence of two maths answers with ``math-verify`` (no eval; SymPy parsing).

    Falls back to comparing normalised strings when math-verify is missing or cannot parse.
    Call it inside a time limit (:func:`time_limit`); it disables math-verify's own alarms.

    >>> math_equivalent("\\\\frac{1}{2}", "0.5")
    True
    """
    if pred is None or len(pred) > MAX_ANSWER_CHARS:
        return False
    try:
        from math_verify import LatexExtractionConfig, parse, verify  # noqa: PLC0415  (optional: slow to import, absent on a bare GPU machine)
    except ImportError:  # pragma: no cover - math-verify is a dependency
        return _normalise(pred) == _normalise(gold)

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns that we disable its alarms
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # LaTeX extraction only: math-verify's plain-expression path goes through SymPy's
        # parse_expr, which calls eval(); the LaTeX path is a grammar-based parser.
        latex_only = [LatexExtractionConfig()]
        g = parse(f"${gold}$", extraction_config=latex_only, parsing_timeout=None)
        p = parse(f"${pred}$", extraction_config=latex_only, parsing_timeout=None)
        if g and p and verify(g, p, timeout_seconds=None):
            return True
    return _normalise(pred) == _normalise(gold)


# --------------------------------------------------------------------------- scorers
def _answer_of(example: Any) -> str:
    if isinstance(example, dict):
        return str(example["answer"])
    return str(example.answer)


def score_last_number(text: str, example: Any) -> float:
    """1.0 when the last number in ``text`` equals the example's answer."""
    return float(numbers_equal(extract_last_number(text), _answer_of(example)))


def score_boxed_math(text: str, example: Any) -> float:
    """1.0 when the last ``\\boxed{}`` is equivalent to the answer (math-verify)."""
    return float(math_equivalent(extract_boxed(text), _answer_of(example)))


# reasoning-gym tasks whose score_answer (and everything it calls inside reasoning-gym) never
# hands the answer to eval/exec/compile/__import__ or SymPy's string parsers; re-checked by
# tests/test_rewards.py with reasoning_gym_scorer_problems() against the installed reasoning-gym.
SAFE_REASONING_GYM_TASKS = frozenset(
    """
    acre aiw arc_1d base_conversion basic_arithmetic bf binary_alternation caesar_cipher chain_sum
    count_bits count_primes course_schedule gcd gsm_symbolic isomorphic_strings largest_island lcm
    leg_counting letter_counting list_functions mahjong_puzzle maze modulo_grid number_filtering
    number_sequence ransom_note rotate_matrix rotten_oranges simple_equations simple_geometry
    string_manipulation string_splitting string_synthesis syllogism word_sequence_reversal
    """.split()
)

_UNSAFE_SOURCE = re.compile(
    r"(?<![\w.])(?:eval|exec|compile|__import__)\s*\(|\bparse_expr\b|\bsympify\b|\bparse_latex\b|\bS\(|\bimportlib\b|\bsubprocess\b|\bos\.system\b"
)


# packages whose functions turn strings into expressions with eval (sympify, parse_expr)
_STRING_PARSING_PACKAGES = ("sympy", "math_verify", "latex2sympy2", "latex2sympy2_extended")


def reasoning_gym_scorer_problems(name: str, *, max_functions: int = 200) -> list[str]:
    """Unsafe constructs reachable from reasoning-gym dataset ``name``'s ``score_answer``.

    Walks the source of ``score_answer`` and, recursively, every function it calls that is
    defined inside reasoning-gym (``self.method``, module functions, ``module.function``), and
    reports each ``eval``/``exec``/``compile``/``__import__``/``parse_expr``/``sympify``/
    ``parse_latex``/``S(...)`` as ``"module.function: match"``. Calls into code outside
    reasoning-gym (the standard library, NumPy) are not followed, except that importing SymPy's
    parsers is caught by name. An empty list means no model text can reach such a call.
    """
    from reasoning_gym.factory import DATASETS  # noqa: PLC0415  (optional: slow to import, absent on a bare GPU machine)

    cls = DATASETS[name][0]
    problems: list[str] = []
    seen: set[int] = set()
    todo: list[tuple[Any, Any]] = [(cls.score_answer, cls)]
    while todo and len(seen) < max_functions:
        fn, owner = todo.pop()
        fn = inspect.unwrap(getattr(fn, "__func__", fn))
        if id(fn) in seen or not callable(fn):
            continue
        seen.add(id(fn))
        module = inspect.getmodule(fn)
        if module is None or not module.__name__.startswith("reasoning_gym"):
            continue
        try:
            src = textwrap.dedent(inspect.getsource(fn))
        except (OSError, TypeError):
            problems.append(f"{module.__name__}.{getattr(fn, '__qualname__', fn)}: source not available")
            continue
        where = f"{module.__name__}.{getattr(fn, '__qualname__', getattr(fn, '__name__', '?'))}"
        problems += [f"{where}: {m.group(0)}" for m in _UNSAFE_SOURCE.finditer(src)]
        for node in ast.walk(ast.parse(src)):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            target = None
            if isinstance(f, ast.Name):
                target = getattr(module, f.id, None)
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                if f.value.id in ("self", "cls") and owner is not None:
                    target = getattr(owner, f.attr, None)
                else:
                    base = getattr(module, f.value.id, None)
                    target = getattr(base, f.attr, None) if base is not None else None
            if target is None:
                continue
            target_module = getattr(inspect.getmodule(target), "__name__", "") or ""
            if target_module.split(".")[0] in _STRING_PARSING_PACKAGES:
                problems.append(
                    f"{where}: calls {target_module}.{getattr(target, '__name__', '?')} (it may parse strings with eval)"
                )
                continue
            if inspect.isclass(target):
                todo.append((getattr(target, "__init__", None), target))
                todo.append((getattr(target, "__call__", None), target))  # noqa: B004 (the method itself, to read its source)
            else:
                todo.append(
                    (
                        target,
                        owner
                        if isinstance(f, ast.Attribute)
                        and isinstance(f.value, ast.Name)
                        and f.value.id in ("self", "cls")
                        else None,
                    )
                )
    return problems


def check_reasoning_gym_scorer(name: str) -> None:
    """Raise :class:`~bupo_core.errors.InputFormatError` unless reasoning-gym task ``name``'s scorer is allow-listed."""
    if name not in SAFE_REASONING_GYM_TASKS:
        raise InputFormatError(
            f"reasoning-gym task {name!r} is not on the list of tasks whose own scorer is known to be safe "
            f"(some reasoning-gym scorers run eval() or SymPy's parse_expr on the model's answer, which would "
            f"execute model text). Grade it with --reward last_number or --reward boxed_math instead, or use one of: "
            f"{', '.join(sorted(SAFE_REASONING_GYM_TASKS))}."
        )


def score_reasoning_gym(text: str, example: Any) -> float:
    """The reasoning-gym task's own ``score_answer`` on the extracted answer.

    ``example`` must carry ``entry`` (the reasoning-gym row), ``dataset`` (with ``score_answer``)
    and ``answer_format`` (``"last_number"`` or ``"boxed"``). Only tasks in
    :data:`SAFE_REASONING_GYM_TASKS` are scored; others raise before the answer is touched.
    """
    name = _dataset_name(example.dataset)
    if name not in SAFE_REASONING_GYM_TASKS:
        check_reasoning_gym_scorer(name or type(example.dataset).__name__)
    fmt = getattr(example, "answer_format", "last_number")
    answer = extract_boxed(text) if fmt == "boxed" else extract_last_number(text)
    if answer is None or len(answer) > MAX_ANSWER_CHARS:
        return 0.0
    score = example.dataset.score_answer(answer, example.entry)
    return float(score or 0.0)


def _dataset_name(dataset: Any) -> str | None:
    """The reasoning-gym registry name of ``dataset``'s class (``None`` when not registered)."""
    try:
        from reasoning_gym.factory import DATASETS  # noqa: PLC0415  (optional: slow to import, absent on a bare GPU machine)
    except ImportError:  # pragma: no cover
        return None
    for name, (cls, _cfg) in DATASETS.items():
        if type(dataset) is cls:
            return name
    return None


SCORERS: dict[str, ScoreFn] = {
    "last_number": score_last_number,
    "boxed_math": score_boxed_math,
    "reasoning_gym": score_reasoning_gym,
}


# the answer formats (``PromptTemplate.answer_format``) a scorer can read; scorers not listed read any
SCORER_ANSWER_FORMATS: dict[str, tuple[str, ...]] = {"boxed_math": ("boxed",)}


def register_scorer(name: str, fn: ScoreFn) -> None:
    """Make ``fn(response_text, example) -> float`` available as scorer ``name``.

    Scorers must not run model text as code. Registered scorers are time-limited and
    crash-proofed by :class:`Grader` like the built-in ones.
    """
    SCORERS[name] = fn
    _REGISTRY_VERSION[0] += 1


def get_scorer(name: str) -> ScoreFn:
    """The scorer called ``name``; unknown names raise with the list of known ones."""
    if name not in SCORERS:
        raise InputFormatError(
            f"unknown reward {name!r}; known rewards: {', '.join(sorted(SCORERS))} (or add one with bupo_core.rewards.register_scorer)"
        )
    return SCORERS[name]


# --------------------------------------------------------------------------- time limits
class GraderTimeout(Exception):
    """A scorer ran past its time limit."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`GraderTimeout` in the block after ``seconds`` (main thread, POSIX).

    Elsewhere it does nothing; :class:`Grader` then uses a worker process instead.
    """
    usable = (
        seconds
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _raise(signum, frame):  # noqa: ARG001
        raise GraderTimeout(f"grader exceeded {seconds} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_REGISTRY_VERSION = [0]


def _serve(conn) -> None:  # pragma: no cover - runs in the worker process
    # the fork inherits the trainer's handlers (SIGTERM/SIGINT -> checkpoint and stop), which make no sense
    # here: a terminated worker just ends (default SIGTERM), Ctrl-C is the parent's business (it kills the worker)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        name, text, example = msg
        try:
            conn.send(("ok", float(SCORERS[name](text, example))))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class GradingWorker:
    """One forked process that runs scorers; killed and restarted when a scorer runs too long.

    A worker process is the only reliable limit for checks that spend their time inside C code
    (SymPy/gmpy arithmetic on ``10^{10^{10^{10}}}`` never returns to the interpreter, so a
    signal-based alarm cannot interrupt it).
    """

    def __init__(self) -> None:
        self.proc = None
        self.conn = None
        self.version = -1

    def _start(self) -> None:
        self.close()
        ctx = mp.get_context("fork")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.version = _REGISTRY_VERSION[0]

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(1)
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None

    def score(self, name: str, text: str, example: Any, seconds: float) -> float:
        if self.proc is None or not self.proc.is_alive() or self.version != _REGISTRY_VERSION[0]:
            self._start()
        self.conn.send((name, text, example))
        if not self.conn.poll(seconds):
            self.close()
            raise GraderTimeout(f"grader exceeded {seconds} s")
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(value)
        return value


_WORKER = GradingWorker()


# --------------------------------------------------------------------------- grader
@dataclass
class RewardBatch:
    """Rewards of a batch of responses and what went wrong while scoring.

    Attributes:
        rewards: one reward per response, in [0, 1].
        raw_scores: the scorer's own values before binarisation.
        too_long: responses longer than ``max_chars`` (scored 0 without being parsed).
        timeouts: responses whose scoring ran past the time limit (scored 0).
        errors: responses whose scorer raised (scored 0); ``error_messages`` keeps the first few.
    """

    rewards: list[float]
    raw_scores: list[float]
    too_long: int = 0
    timeouts: int = 0
    errors: int = 0
    error_messages: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Responses that scored 0 because grading could not finish normally."""
        return self.too_long + self.timeouts + self.errors


@dataclass
class Grader:
    """Scores responses safely.

    Attributes:
        scorer: a scorer name from :data:`SCORERS`.
        binary: map the score to 1.0 / 0.0 with ``threshold`` (reasoning-gym's ``score_answer``
            gives partial credit, e.g. 0.01 for some wrong answers).
        threshold: scores >= this count as correct when ``binary``.
        timeout_s: time limit per response.
        max_chars: responses longer than this score 0 without being parsed.
        isolation: ``"process"`` (score in a forked worker process that is killed on timeout:
            needed for SymPy-based checks, whose C-level arithmetic a signal cannot interrupt),
            ``"signal"`` (SIGALRM in this process: cheaper, enough for pure-Python scorers; only on
            the main thread, elsewhere the worker process is used) or ``"auto"`` (process for
            ``boxed_math``, signal otherwise).
    """

    scorer: str = "last_number"
    binary: bool = True
    threshold: float = 1.0
    timeout_s: float = 5.0
    max_chars: int = MAX_RESPONSE_CHARS
    isolation: str = "auto"

    def score_one(self, text: str, example: Any, stats: RewardBatch | None = None) -> tuple[float, float]:
        """``(reward, raw_score)`` of one response; problems are counted in ``stats``."""
        fn = get_scorer(self.scorer)
        stats = stats if stats is not None else RewardBatch([], [])
        if not isinstance(text, str) or len(text) > self.max_chars:
            stats.too_long += 1
            return 0.0, 0.0
        try:
            mode = self.isolation
            if mode == "auto":
                mode = "process" if self.scorer == "boxed_math" else "signal"
            signal_ok = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
            if mode == "signal" and signal_ok:
                with time_limit(self.timeout_s):
                    raw = float(fn(text, example))
            else:
                raw = _WORKER.score(self.scorer, text, example, self.timeout_s)
        except GraderTimeout:
            stats.timeouts += 1
            return 0.0, 0.0
        except Exception as exc:  # noqa: BLE001 - a scorer failure must never stop training
            stats.errors += 1
            if len(stats.error_messages) < 5:
                stats.error_messages.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            return 0.0, 0.0
        if not math.isfinite(raw):
            stats.errors += 1
            return 0.0, 0.0
        reward = (1.0 if raw >= self.threshold else 0.0) if self.binary else min(max(raw, 0.0), 1.0)
        return reward, raw

    def __call__(self, texts: Sequence[str], examples: Sequence[Any]) -> RewardBatch:
        """Score ``texts[i]`` against ``examples[i]``."""
        if len(texts) != len(examples):
            raise ValueError(f"{len(texts)} responses but {len(examples)} examples")
        out = RewardBatch([], [])
        for t, e in zip(texts, examples):
            r, raw = self.score_one(t, e, out)
            out.rewards.append(r)
            out.raw_scores.append(raw)
        return out
