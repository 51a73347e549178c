"""Reading a stage config file: YAML (.yaml/.yml) or TOML (.toml), then validation."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

import yaml

from ptcore.config.schema import ConfigError, validate_config

__all__ = ["read_document", "load_config"]


def read_document(path: str | os.PathLike) -> dict:
    """The parsed file, unvalidated; syntax errors become ConfigError with the position."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            doc = yaml.safe_load(text)
        elif path.suffix == ".toml":
            doc = tomllib.loads(text)
        else:
            raise ConfigError(f"config file {str(path)!r}: use .yaml, .yml or .toml")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {str(path)!r} is not valid {path.suffix[1:].upper()}: "
                          f"{e}") from e
    return doc if doc is not None else {}


def load_config(path: str | os.PathLike) -> dict:
    """Read and validate the stage config at ``path`` (see docs/config.md)."""
    return validate_config(read_document(path), source=str(path))
