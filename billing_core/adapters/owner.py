"""Who holds a claim, and whether that process is gone.

Rules kept here
- A claim (a ``dispatching`` provisioning request, a ``sending`` outbox row, a ``running`` bill
  or sync run) records its holder as ``pid@host/start``: the process id, the host name, and the
  process's start time in clock ticks since boot (Linux ``/proc/<pid>/stat``, field 22; empty
  where there is no ``/proc``). The start time tells a reused pid from the holder.
- :func:`is_gone` answers True only when the holder is known to be gone: it ran on this host
  and no process has its pid, or the process with its pid started at another time. A holder on
  another host, or an owner this module cannot parse, is never known to be gone: the claim's
  lease decides for it.
- Asking costs a ``kill(pid, 0)`` and one small file read, no database.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from functools import cache

_MAX = 160          # the claimed_by columns' width


def _start_ticks(pid: int) -> str:
    """The process's start time since boot in clock ticks, '' if unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return ""
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else ""


@cache
def _host() -> str:
    return socket.gethostname()


def current() -> str:
    """This process as a claim owner: ``pid@host/start``. (Not cached: a forked child is
    another owner.)"""
    pid = os.getpid()
    return f"{pid}@{_host()}/{_start_ticks(pid)}"[:_MAX]


def parse(owner: str | None) -> tuple[int, str, str] | None:
    """(pid, host, start) of an owner string, None if it is not one."""
    if not owner or "@" not in owner:
        return None
    pid_text, _, rest = owner.partition("@")
    host, _, start = rest.rpartition("/") if "/" in rest else (rest, "", "")
    if not pid_text.isdigit() or not host:
        return None
    return int(pid_text), host, start


def is_gone(owner: str | None) -> bool:
    """Whether the claim's holder is known to be gone (see the module rules)."""
    parsed = parse(owner)
    if parsed is None:
        return False
    pid, host, start = parsed
    return host == _host() and pid_gone(pid, start)


def pid_gone(pid: int, start: str = "") -> bool:
    """Whether no process of this host has ``pid`` (or the one that has it started at another
    time than ``start``, when given)."""
    try:
        os.kill(pid, 0)         # signal 0 asks whether the process exists, sends nothing
    except ProcessLookupError:
        return True
    except PermissionError:     # it exists, as another user's process
        pass
    if start:
        now = _start_ticks(pid)
        return bool(now) and now != start
    return False


def gone_among(owners: Iterable[str | None]) -> list[str]:
    """The owners whose holder is known to be gone (None, an unowned claim, is not)."""
    return sorted({o for o in owners if o is not None and is_gone(o)})
