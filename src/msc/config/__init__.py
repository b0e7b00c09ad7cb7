"""msc.config — msgspec Structs for msc.toml and users.toml, loading and validation."""

from msc.config.load import ConfigError, ConfigIssue, Settings, load
from msc.config.model import Config, UsersFile

__all__ = ["Config", "ConfigError", "ConfigIssue", "Settings", "UsersFile", "load"]
