"""What the ``msc`` command asks of the running switch through its control socket
(:mod:`msc.server.control`): ``control_<op>`` handlers, a part of :class:`msc.server.switch.Switch`
(its attributes: :class:`msc.server.parts.SwitchParts`).

Each applies a change made outside the switch at once — users.toml rewritten, an account
unlocked, a station disabled — or runs a journal operation the switch must do itself (it is the
journal's only writer while it runs).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from msc.mnemonics.directory import Directory
from msc.server.control import AuthChanged, Checkpoint, Ping, Purge, Station, Unlock, UsersChanged, VerifyFailed
from msc.server.parts import SwitchParts, started


class ControlOps(SwitchParts):
    """The control socket's operations (see the module docstring)."""

    async def control_users_changed(self, req: UsersChanged) -> dict[str, Any]:
        err = self.reload_users()
        return {"ok": err is None, "error": err}

    async def control_checkpoint(self, req: Checkpoint) -> dict[str, Any]:
        cp = await started(self.journal).checkpoint()
        return {"ok": True, "tree_size": cp.tree_size if cp else started(self.journal).tree_size}

    async def control_purge(self, req: Purge) -> dict[str, Any]:
        purged = await started(self.journal).purge(self.settings.config.journal.retention_days, actor=req.actor)
        return {"ok": True, "purged": purged}

    async def control_verify_failed(self, req: VerifyFailed) -> dict[str, Any]:
        self.metrics.journal_verify_failures.inc()
        self.log.error("journal.verify_failed", first_bad=req.first_bad)
        return {"ok": True}

    async def control_ping(self, req: Ping) -> dict[str, Any]:
        return {"ok": True, "switch": self.settings.config.switch.name, "pid": os.getpid(),
                "reload_error": self.last_reload_error}

    async def control_unlock(self, req: Unlock) -> dict[str, Any]:
        await asyncio.to_thread(self.auth.unlock, req.id)
        return {"ok": True}

    async def control_auth_changed(self, req: AuthChanged) -> dict[str, Any]:
        """The msc command changed logon state in state.db (a lockout, an unlock): re-read it."""
        await asyncio.to_thread(self.auth.refresh)
        return {"ok": True}

    async def control_station(self, req: Station) -> dict[str, Any]:
        """``msc station disable|enable``: applied at once; a disabled station's session is dropped."""
        mnemonic, disabled = req.mnemonic, req.disabled
        await asyncio.to_thread(self.state.set_station, mnemonic, disabled)
        now_disabled = frozenset(await asyncio.to_thread(self.state.disabled_stations))
        self.apply_directory(Directory(self.settings, disabled_stations=now_disabled))
        return {"ok": True}
