"""Config handling shared by the Snakefile and the package, free of torch so that Snakemake's
parse of the workflow stays fast: command-line overrides and experiments.
"""

from __future__ import annotations

from typing import Any

import re

import yaml

SCALARS = (bool, int, float, type(None))
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def typed(value: Any) -> Any:
    """``--config`` values with the types a config file would give them.

    Snakemake parses a nested ``--config 'train={epochs: 50}'`` with YAML's BaseLoader, which
    keeps every leaf a string (``'50'``); config files are read with the safe loader (``50``).
    String leaves are read again with the safe loader where that gives a number, a boolean or
    null (``'off'`` -> False, as in a config file), or where it is a number that PyYAML reads as
    text (``'2e-4'``); other strings (paths, names, dates) are kept.
    """
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, str) and value.strip():
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(parsed, SCALARS):
            return parsed
        # 2e-4: YAML 1.1 needs a dot (2.0e-4) to read a float
        return float(value) if NUMBER.fullmatch(value.strip()) else value
    return value
