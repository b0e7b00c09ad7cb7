"""A loaded, validated configuration and the paths it names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msc.config.model import Config, UsersFile


@dataclass(frozen=True)
class Settings:
    """A loaded, validated configuration: both files and the directory paths are relative to."""

    config: Config
    users: UsersFile
    config_path: Path
    users_path: Path
    base_dir: Path
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def path(self, p: str) -> Path:
        """A config path made absolute (relative paths are relative to msc.toml's directory)."""
        q = Path(p)
        return q if q.is_absolute() else self.base_dir / q

    @property
    def data_dir(self) -> Path:
        return self.path(self.config.switch.data_dir)

    @property
    def journal_dir(self) -> Path:
        return self.path(self.config.journal.dir)

    @property
    def key_file(self) -> Path:
        return self.path(self.config.journal.key_file)

    @property
    def state_db(self) -> Path:
        return self.data_dir / "state.db"
