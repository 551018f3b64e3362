"""Widget messages that name a browser tab's subshell still reach the panel after that tab is gone.

JupyterLab sends widget messages on a kernel subshell (ipykernel 7: one per comm target, per tab). ipykernel 7.4
routes a message for a comm to the subshell that comm last answered on, not the one the message came on; when
that subshell was deleted (its tab closed or reloaded) the kernel answers `UnknownSubshellError` and drops the
message: the next tab's clicks silently do nothing. This guard routes such a message to the subshell it came
on. A new tab's `request_state` (it draws nothing until every widget answers) always goes to its own subshell:
routed to the old tab's, which Lab deletes as the new tab opens, it could be queued there when that went, and
the new tab stayed blank. Nothing changes for other messages to a subshell that still exists, nor for kernels
without subshells.
"""

from __future__ import annotations

from typing import Any, Optional


def _known_subshells(comm: Any) -> Optional[list]:
    kernel = getattr(comm, "kernel", None)
    manager = getattr(getattr(kernel, "shell_channel_thread", None), "manager", None)
    listing = getattr(manager, "list_subshell", None)
    return list(listing()) if listing is not None else None


def guard_comm_routing() -> bool:
    """Install the guard once per kernel process; True when installed (now or before)."""
    try:
        from ipykernel.comm.comm import BaseComm
    except ImportError:
        return False
    original = getattr(BaseComm, "_reply_subshell_for", None)
    if original is None:
        return False
    if getattr(original, "scenario_guard", False):
        return True

    def reply_subshell_for(self, data, default):
        chosen = original(self, data, default)
        if chosen is None or chosen == default:
            return chosen
        if isinstance(data, dict) and data.get("method") == "request_state":
            return default  # a new tab's question: queued on the old tab's subshell, it is lost when that goes
        try:
            known = _known_subshells(self)
        except Exception:  # noqa: BLE001 — never break the kernel's routing
            return chosen
        return chosen if known is None or chosen in known else default

    reply_subshell_for.scenario_guard = True  # type: ignore[attr-defined]
    setattr(BaseComm, "_reply_subshell_for", reply_subshell_for)  # noqa: B010
    return True
