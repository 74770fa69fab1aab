"""A sandbox CRM in a child process, driven over its HTTP admin API (`/__admin__`).

Why: an in-process `Sandbox` serves from threads of the caller's own interpreter, so its JSON
generation competes with the caller for the GIL and its CPU counts as the caller's. A real CRM
is another machine; benchmarks run the sandbox here to measure what production sees.

Rules this module keeps:
- Nothing happens until `start()` (or `with RemoteSandbox(...)`): then `python -m
  connectors.sandbox --port 0 ...` starts, and its first lines give the URL and the CA bundle
  (`server.serve_forever`); start-up is bounded by `startup_timeout`, and a child that dies or
  stays silent is stopped and reported with what it printed.
- The surface is the part of `Sandbox` that configs and benchmarks use: `url`, `ca_bundle`,
  `credentials`, `salesforce.credentials`, `salesforce.admin(action, payload)`, `dataverse`
  (None: Salesforce only) and `counters` (`get`, `total`, `reset`), each one admin call.
- `notify` (the `--notify*` command-line options, e.g. `("--notify", url)`) makes the child
  send change events; `notify_counters()` and `notify_flush()` read them over the admin API.
- Every admin call has a timeout. `stop()` interrupts the child (SIGINT: it removes its temp
  dir), waits a bounded time, then kills it; no child outlives the context.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, Self

from .salesforce.auth import Credentials
from .tls import CABundleSession

_URL = re.compile(r"^sandbox CRM at (\S+)")
_CA = re.compile(r"^\s*CA bundle:\s+(\S.*)$")
_READY = re.compile(r"^\s*admin:")


class RemoteSandboxError(RuntimeError):
    pass


class RemoteCounters:
    """`CallCounter`'s reading side, over `GET /__admin__/counters`."""

    def __init__(self, box: RemoteSandbox) -> None:
        self.box = box

    def _calls(self) -> list[dict[str, Any]]:
        return list(self.box.admin_get("counters")["calls"])

    def total(self, crm: str | None = None) -> int:
        return sum(int(c["count"]) for c in self._calls() if crm is None or c["crm"] == crm)

    def get(self, crm: str, endpoint: str, method: str | None = None) -> int:
        return sum(int(c["count"]) for c in self._calls()
                   if c["crm"] == crm and c["endpoint"] == endpoint
                   and (method is None or c["method"] == method.upper()))

    def reset(self) -> None:
        self.box.admin_post("counters/reset", {})


class RemoteSide:
    """One side of the remote sandbox: its credentials and its admin actions."""

    def __init__(self, box: RemoteSandbox, name: str) -> None:
        self.box, self.name = box, name
        info = box.admin_get(name)
        self.credentials = Credentials(
            client_id=info["client_id"], client_secret=info["client_secret"],
            username=info["username"], password=info["password"],
            security_token=info["security_token"])

    def admin(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.box.admin_post(f"{self.name}/{action}", payload)


class RemoteSandbox:
    """`ledgerbridge sandbox` in a child process (Salesforce side); use as a context manager."""

    def __init__(self, *, seed: int = 0, accounts: int = 100, quotes: int | None = None,
                 sides: Iterable[str] = ("salesforce",), startup_timeout: float = 60.0,
                 timeout: tuple[float, float] = (5.0, 60.0),
                 notify: Iterable[str] = ()) -> None:
        self.notify_args = tuple(notify)     # command-line options, not a NotifyConfig
        self.seed, self.accounts, self.quotes = seed, accounts, quotes
        self.side_names = tuple(sides)
        self.startup_timeout, self.timeout = startup_timeout, timeout
        self.url = ""
        self.ca_bundle = ""
        self.credentials: Credentials | None = None
        self.salesforce: RemoteSide | None = None
        self.dataverse: Any = None
        self.counters = RemoteCounters(self)
        self._proc: subprocess.Popen[str] | None = None
        self._session: CABundleSession | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._output: list[str] = []

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "connectors.sandbox", "--port", "0", "--seed",
               str(self.seed), "--accounts", str(self.accounts)]
        if self.quotes is not None:
            cmd += ["--quotes", str(self.quotes)]
        for side in self.side_names:
            cmd += ["--side", side]
        return cmd + list(self.notify_args)

    def start(self) -> Self:
        if self._proc is not None:
            return self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, text=True,
                                      bufsize=1)
        threading.Thread(target=self._drain, args=(self._proc,), daemon=True,
                         name="remote-sandbox-stdout").start()
        self._wait_ready()
        self._session = CABundleSession(self.ca_bundle, timeout=self.timeout)
        if "salesforce" in self.side_names:
            self.salesforce = RemoteSide(self, "salesforce")

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        """Reads the child's stdout to its end (so it never blocks on a full pipe)."""
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(left, 0.0))
            except queue.Empty:
                raise RemoteSandboxError(
                    f"sandbox did not start within {self.startup_timeout:.0f} s: "
                    f"{self._printed()}") from None
            if line is None:
                raise RemoteSandboxError(f"sandbox exited while starting: {self._printed()}")
            self._output.append(line)
            if (m := _URL.match(line)) is not None:
                self.url = m[1]
            elif (m := _CA.match(line)) is not None:
                self.ca_bundle = m[1].strip()
            elif _READY.match(line):
                if not self.url or not self.ca_bundle:
                    raise RemoteSandboxError(f"sandbox printed no URL or CA bundle: "
                                             f"{self._printed()}")
                return

    def _printed(self) -> str:
        return " | ".join(self._output[-10:]) or "(nothing printed)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if self._session is not None:
            self._session.close()
            self._session = None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _admin(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        if self._session is None:
            raise RemoteSandboxError("the remote sandbox is not running")
        resp = self._session.request(method, f"{self.url}/__admin__/{path}", json=body)
        if resp.status_code != 200:
            raise RemoteSandboxError(f"{method} /__admin__/{path}: {resp.status_code} "
                                     f"{resp.text[:500]}")
        return dict(resp.json())

    def admin_get(self, path: str) -> dict[str, Any]:
        return self._admin("GET", path, None)

    def admin_post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._admin("POST", path, body)

    def notify_counters(self) -> dict[str, Any]:
        """The change events' counters (`GET /__admin__/notify`)."""
        return dict(self.admin_get("notify")["counters"])

    def notify_flush(self, timeout: float = 10.0) -> bool:
        """Wait until the child has no change event pending; False on timeout."""
        return bool(self.admin_post("notify/flush", {"timeout": timeout})["flushed"])
