"""User-facing configuration: schema (pydantic) and the YAML loader."""

from thrifty.config.loader import load_config, parse_text, validate_data
from thrifty.config.schema import ApiConfig, ProjectConfig

__all__ = ["ApiConfig", "ProjectConfig", "load_config", "parse_text", "validate_data"]
