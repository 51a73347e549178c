"""Stage configs (YAML or TOML): what `ptcore run` executes and what the strategy
subcommands accept with ``--config``. Everything is checked when the file is read, before
any training: unknown keys, wrong types, bad values. See docs/config.md."""
from ptcore.config.cli import add_config_argument, merge_config
from ptcore.config.load import load_config, read_document
from ptcore.config.schema import STAGES, ConfigError, validate_config

__all__ = ["ConfigError", "STAGES", "load_config", "read_document", "validate_config",
           "add_config_argument", "merge_config"]
