"""The config: one schema (``model``), one loader (``loader``)."""

from agent.config.loader import DEFAULTS_ORIGIN, find_config_path, load_config, parse_config, user_config_path
from agent.config.model import Config

__all__ = ["Config", "DEFAULTS_ORIGIN", "find_config_path", "load_config", "parse_config", "user_config_path"]
