"""Configuration written once: flags, docs tables, sweep eval sections and demo flags come from the dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from bupo_core import sampling
from bupo_core.analysis import AnalysisConfig
from bupo_core.cli import build_parser, main
from bupo_core.config_cli import (
    add_config_arguments,
    config_from_args,
    field_help,
    fill_generated_blocks,
    markdown_table,
)
from bupo_core.errors import InputFormatError
from bupo_core.evaluate import EvalConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class _Sequences:
    """A config with sequence fields.

    Attributes:
        names: some names.
        sizes: some sizes.
        modes: some modes.
        pair: two numbers.
        maybe: optional names.
    """

    names: tuple[str, ...] = ("a", "b")
    sizes: list[int] = field(default_factory=lambda: [1])
    modes: tuple[Literal["x", "y"], ...] = ("x",)
    pair: tuple[float, float] = (0.5, 1.5)
    maybe: tuple[str, ...] | None = None


def test_tuple_and_list_fields_become_flags_with_their_types():
    p = argparse.ArgumentParser()
    add_config_arguments(p, _Sequences)
    cfg = config_from_args(
        _Sequences,
        p.parse_args(
            ["--names", "c", "d", "e", "--sizes", "3", "4", "--modes", "y", "x", "--pair", "2", "3", "--maybe", "q"]
        ),
    )
    assert cfg == _Sequences(names=("c", "d", "e"), sizes=[3, 4], modes=("y", "x"), pair=(2.0, 3.0), maybe=("q",))
    assert isinstance(cfg.sizes, list) and isinstance(cfg.names, tuple)
    assert config_from_args(_Sequences, p.parse_args([])) == _Sequences()  # defaults kept
    with pytest.raises(SystemExit):
        p.parse_args(["--modes", "z"])  # Literal items are choices
    with pytest.raises(SystemExit):
        p.parse_args(["--sizes", "one"])  # int items are parsed as int


def test_entropy_statistics_flag_chooses_the_lens_statistics(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "What is 2 + 3?", "response": "5 is the sum"}) + "\n")
    base = ["entropy", "--model", "tiny-random-llama", "--pairs", str(pairs), "--device", "cpu", "--no-figures"]
    assert main(base + ["--statistics", "entropy", "vector_norm", "logprob", "--out", str(tmp_path / "with")]) == 0
    assert main(base + ["--statistics", "entropy", "vector_norm", "--out", str(tmp_path / "without")]) == 0
    with_lp = json.loads((tmp_path / "with" / "entropy.json").read_text())
    without = json.loads((tmp_path / "without" / "entropy.json").read_text())
    assert set(with_lp["statistics"]) == {"logprob"} and len(with_lp["statistics"]["logprob"]["layer"]) == 3
    assert without["statistics"] == {} and without["layer_logprob"] is None
    assert with_lp["layer_entropy"] == without["layer_entropy"]  # same model, same tokens: the entropy is unchanged
    capsys.readouterr()
    assert main(base + ["--statistics", "entropy", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "statistics must include ['vector_norm']" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(base + ["--statistics", "no_such_statistic", "--out", "x"])


# ----------------------------------------------------------------------------- docs tables
def _tool():
    spec = importlib.util.spec_from_file_location("config_tables", ROOT / "tools" / "config_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_docs_config_tables_are_generated_and_current():
    tool = _tool()
    assert tool.stale_files() == [], "run `python tools/config_tables.py`"
    texts = {p.name: p.read_text() for p in tool.documented_files()}
    for name, doc in (("TrainConfig", "training.md"), ("EvalConfig", "experiments.md"), ("AnalysisConfig", "lens.md")):
        assert f"<!-- BEGIN generated: {name} -->" in texts[doc], (name, doc)
    # every field of the three configs is in its table, BuPO's own fields included
    from bupo_core.trainer import TrainConfig

    for cls, doc in ((TrainConfig, "training.md"), (EvalConfig, "experiments.md"), (AnalysisConfig, "lens.md")):
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in texts[doc], (cls.__name__, f.name)
    for name in ("ipa_norm", "ipa_lr", "freeze_through_layer"):
        assert f"| `{name}` |" in texts["training.md"]


def test_a_drifted_table_is_detected_and_rewritten(tmp_path):
    tool = _tool()
    (tmp_path / "docs").mkdir()
    block = "<!-- BEGIN generated: EvalConfig -->\n| field | default | meaning |\n| `k` | 3 | old |\n<!-- END generated: EvalConfig -->\n"
    (tmp_path / "docs" / "x.md").write_text("# X\n\n" + block + "\nafter\n")
    (tmp_path / "README.md").write_text("no tables\n")
    assert tool.stale_files(tmp_path) == [tmp_path / "docs" / "x.md"]
    assert tool.stale_files(tmp_path, write=True) and tool.stale_files(tmp_path) == []
    text = (tmp_path / "docs" / "x.md").read_text()
    assert text.startswith("# X\n\n<!-- BEGIN") and text.endswith("<!-- END generated: EvalConfig -->\n\nafter\n")
    assert markdown_table(EvalConfig) in text and "| `top_p` | 1.0 |" in text
    with pytest.raises(InputFormatError, match="no config named 'Nope'"):
        fill_generated_blocks("<!-- BEGIN generated: Nope -->\n<!-- END generated: Nope -->")


def test_table_rows_follow_the_dataclass():
    @dataclass
    class Small:
        """Doc.

        Attributes:
            a, b: the pair (``x``).
            c: a name with a | bar.
        """

        a: int = 1
        b: int = 2
        c: str = "z"

    assert markdown_table(Small).splitlines()[2:] == [
        "| `a`, `b` | 1, 2 | the pair (`x`). |",
        "| `c` | `z` | a name with a \\| bar. |",
    ]


# ----------------------------------------------------------------------------- sampling fields once
def test_sampling_fields_are_declared_once_with_named_defaults():
    from bupo_core.teaching.demo import DemoConfig

    for cls in (EvalConfig, AnalysisConfig):
        assert issubclass(cls, sampling.SamplingFields)
        assert field_help(cls)["top_p"] == field_help(sampling.SamplingFields)["top_p"]
        assert [f.name for f in dataclasses.fields(cls)][:3] == ["max_new_tokens", "temperature", "top_p"]
    assert EvalConfig().max_new_tokens == sampling.MAX_NEW_TOKENS_EVAL == 32
    assert AnalysisConfig().max_new_tokens == sampling.MAX_NEW_TOKENS_ANALYSIS == 256
    d = DemoConfig()
    assert d.train.max_new_tokens == d.eval.max_new_tokens == sampling.MAX_NEW_TOKENS_DEMO
    assert d.analysis.max_new_tokens == sampling.MAX_NEW_TOKENS_SHORT_ANALYSIS
    with pytest.raises(InputFormatError, match="top_p must be in"):
        EvalConfig(top_p=1.5)
    with pytest.raises(InputFormatError, match="temperature must be a finite number"):
        AnalysisConfig(temperature=float("nan"))


def test_task_arg_is_one_flag_everywhere():
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    flags = {
        name: next(a for a in sub._actions if "--task-arg" in a.option_strings)
        for name, sub in subs.items()
        if any("--task-arg" in a.option_strings for a in sub._actions)
    }
    assert {"train", "eval", "entropy", "refine"} <= set(flags)
    assert {(a.default, a.metavar, a.help.split("; not given")[0]) for a in flags.values()} == {
        (None, "KEY=VALUE", "a setting of the task's generator, repeatable (e.g. --task-arg max_terms=2)")
    }


# ----------------------------------------------------------------------------- sweep eval: every EvalConfig field
def _spec(eval_section: dict | None = None) -> dict:
    data = {
        "shared": {
            "model": "tiny-random-llama",
            "steps": 1,
            "prompts_per_step": 2,
            "group_size": 2,
            "max_new_tokens": 4,
        },
        "seeds": [0],
        "control": "grpo",
        "arms": [{"name": "grpo", "config": {"method": "grpo"}}],
    }
    if eval_section is not None:
        data["eval"] = eval_section
    return data


def test_sweep_eval_accepts_every_eval_config_field():
    from bupo_core.sweep import cell_key, eval_config, parse_spec

    values = {
        "num_problems": 3,
        "k": 2,
        "max_new_tokens": 5,
        "temperature": 0.7,
        "top_p": 0.9,
        "batch_size": 8,
        "confidence": 0.9,
    }
    assert set(values) == {f.name for f in dataclasses.fields(EvalConfig)} - {"seed"}  # the test covers them all
    spec = parse_spec(_spec(values), "s.yaml")
    assert eval_config(spec.eval, seed=4) == EvalConfig(**values, seed=4)
    # a setting left at its default keeps the key a spec without it had (committed cells stay valid) ...
    plain = parse_spec(_spec({"num_problems": 3}), "s.yaml")
    same = parse_spec(_spec({"num_problems": 3, "top_p": 1.0, "confidence": 0.95}), "s.yaml")
    arm = plain.arm("grpo")
    assert cell_key(plain, arm, 0) == cell_key(same, same.arm("grpo"), 0)
    # ... and a changed one is a different cell
    assert cell_key(plain, arm, 0) != cell_key(parse_spec(_spec({"num_problems": 3, "top_p": 0.9}), "s.yaml"), arm, 0)
    assert parse_spec(_spec(), "s.yaml").eval["max_new_tokens"] == 4  # default: the training length


@pytest.mark.parametrize(
    "section, message",
    [
        ({"top_p": 0}, "s.yaml: eval: top_p must be in \\(0, 1\\]"),
        ({"confidence": 2}, "s.yaml: eval: confidence must be in"),
        ({"seed": 3}, "do not set eval 'seed' \\(each cell evaluates with its training seed\\)"),
        ({"topp": 0.9}, "unknown eval setting\\(s\\) \\['topp'\\].*'top_p'"),
    ],
)
def test_sweep_eval_errors_name_the_setting(section, message):
    from bupo_core.sweep import parse_spec

    with pytest.raises(InputFormatError, match=message):
        parse_spec(_spec(section), "s.yaml")


def test_committed_sweeps_keep_their_cell_keys():
    from bupo_core.sweep import cell_key, load_spec, read_cells

    for name in ("main", "long"):
        spec = load_spec(ROOT / "results" / "specs" / f"{name}.yaml", skip_unavailable=True)
        rows = read_cells(ROOT / "results" / name)
        assert rows and all(r["key"] == cell_key(spec, spec.arm(r["arm"]), r["seed"]) for r in rows), name


# ----------------------------------------------------------------------------- demo flags from the configs
def test_demo_exposes_every_config_field():
    from bupo_core.commands import demo as cmd
    from bupo_core.teaching.demo import DemoConfig
    from bupo_core.trainer import TrainConfig

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["demo"]
    flags = {o for a in sub._actions for o in a.option_strings}
    for f in dataclasses.fields(TrainConfig):
        if f.name not in cmd.TRAIN_SET_BY_DEMO:
            assert "--" + f.name.replace("_", "-") in flags, f.name
    for f in dataclasses.fields(EvalConfig):
        if f.name not in cmd.EVAL_SET_BY_DEMO:
            assert cmd.EVAL_FLAG_NAMES.get(f.name, "--eval-" + f.name.replace("_", "-")) in flags, f.name
    for f in dataclasses.fields(AnalysisConfig):
        if f.name not in cmd.ANALYSIS_SET_BY_DEMO:
            assert "--analysis-" + f.name.replace("_", "-") in flags, f.name
    args = parser.parse_args(
        [
            "demo",
            "--top-p",
            "0.8",
            "--loss-aggregation",
            "sequence-mean",
            "--eval-top-p",
            "0.9",
            "--eval-confidence",
            "0.9",
            "--analysis-top-p",
            "0.7",
            "--analysis-statistics",
            "entropy",
            "vector_norm",
            "logprob",
            "--analysis-norm",
            "final",
            "--eval-problems",
            "5",
            "--steps",
            "3",
        ]
    )
    cfg = cmd.config_from_namespace(args)
    d = DemoConfig()
    assert (cfg.train.top_p, cfg.train.loss_aggregation, cfg.train.steps) == (0.8, "sequence-mean", 3)
    assert (cfg.eval.top_p, cfg.eval.confidence, cfg.eval.num_problems, cfg.eval.k) == (0.9, 0.9, 5, d.eval.k)
    assert (cfg.analysis.top_p, cfg.analysis.statistics, cfg.analysis.norm) == (
        0.7,
        ("entropy", "vector_norm", "logprob"),
        "final",
    )
    assert (
        cfg.analysis.max_new_tokens == d.analysis.max_new_tokens and cfg.train.lr == d.train.lr
    )  # unset flags: the demo's defaults


def test_one_ruff_version_for_ci_pre_commit_and_the_dev_extra():
    import re

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    pinned = next(d for d in dev if d.startswith("ruff"))
    makefile = re.search(r"RUFF_SPEC\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text()).group(1)
    hook = re.search(r"ruff-pre-commit\s+rev:\s*v(\S+)", (ROOT / ".pre-commit-config.yaml").read_text()).group(1)
    assert pinned == makefile == f"ruff=={hook}"
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["line-length"] == 120 and {"E", "F", "W", "I", "B", "UP"} <= set(ruff["lint"]["select"])
