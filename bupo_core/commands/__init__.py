"""Subcommands of ``bupo``; one module each (``NAME``, ``HELP``, ``add_arguments``, ``run``)."""

ORDER = ["demo", "setup", "models", "entropy", "train", "eval", "refine", "sweep", "report"]
