"""The sandbox server: one threaded HTTPS werkzeug server in a background thread, many sides.

Rules this module keeps:
- Nothing happens until `start()` (or `with Sandbox(...)`): then a throw-away CA is made with
  trustme (server certificate for 127.0.0.1 and localhost), its PEM written to a temp dir
  (`ca_bundle`), the port bound (0 = any free port) and the sides built with one SandboxContext.
  With `ca_dir` the CA is kept there instead (`sandbox-ca.pem`, and its key `sandbox-ca.key`
  with mode 0600) and reused by the next start with the same `ca_dir`, so a config written for
  one start keeps working after a restart on the same port and seed (credentials are seeded).
- `/__admin__/...` is answered by `admin_api`; any other path goes to the first side whose
  `matches(path)` is true (404 JSON otherwise).
- "drop" faults close the socket without an answer; "slow" faults sleep in the request's thread.
- Every connection socket has a timeout (REQUEST_TIMEOUT) and does its TLS handshake in its own
  thread, so a silent client never stalls the server; `stop()` shuts the server down and removes
  the temp dir. The Dataverse side is imported lazily and skipped (logged) if it is not there.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

import trustme
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from . import admin_api
from .core import CallCounter, DropConnection, FaultPlan, SandboxClock, SandboxContext, Side
from .dataverse import DataverseSide
from .notify import Notifier, NotifyConfig
from .salesforce import SalesforceSide
from .salesforce.auth import ORG_ID, Credentials

log = logging.getLogger(__name__)
REQUEST_TIMEOUT = 30.0


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT  # socket timeout for every connection

    def log(self, type: str, message: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), message % args)


class _TLSServer(ThreadedWSGIServer):
    """Threaded WSGI server that does the TLS handshake in the connection's own thread.

    werkzeug would wrap the listening socket, so a client that connects and never speaks TLS
    would stall the accept loop; here the handshake runs with a timeout, off that loop.
    """

    def __init__(self, host: str, port: int, app: Any, tls: ssl.SSLContext) -> None:
        super().__init__(host, port, app, handler=_Handler)
        self.ssl_context = tls  # werkzeug reads it: wsgi.url_scheme = https
        self.tls = tls
        self.daemon_threads = True

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(REQUEST_TIMEOUT)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ValueError) as exc:
            log.debug("sandbox: TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            _Handler(conn, client_address, self)
        finally:
            conn.close()


class Sandbox:
    """A local stand-in for Salesforce and Dataverse; use as a context manager."""

    def __init__(self, port: int = 0, seed: int = 0, accounts: int = 100,
                 quotes: int | None = None, sides: Iterable[str] = ("salesforce", "dataverse"),
                 token_ttl: float = 3600.0, api_limit: int = 100_000,
                 credentials: Credentials | None = None, host: str = "127.0.0.1",
                 ca_dir: str | None = None, notify: NotifyConfig | str | None = None) -> None:
        self.port, self.seed, self.accounts, self.quotes = port, seed, accounts, quotes
        self.ca_dir = ca_dir
        self.notify = NotifyConfig(url=notify) if isinstance(notify, str) else notify
        self.notifier: Notifier | None = None
        self.side_names = tuple(sides)
        self.token_ttl, self.api_limit, self.credentials, self.host = (
            token_ttl, api_limit, credentials, host)
        self.counters = CallCounter()
        self.faults = FaultPlan(seed)
        self.clock = SandboxClock()
        self.sides: list[Side] = []
        self.salesforce: SalesforceSide | None = None
        self.dataverse: Any = None
        self.url = ""
        self.ca_bundle = ""
        self.context: SandboxContext | None = None
        self._server: _TLSServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: str | None = None

    def start(self) -> Self:
        """Make the CA, bind the port, build the sides and serve in a background thread."""
        if self._server is not None:
            return self
        try:
            self._start()
        except BaseException:
            self.stop()  # nothing half-started is left behind (temp dir, socket)
            raise
        return self

    def _start(self) -> None:
        if self.ca_dir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="ledgerbridge-sandbox-")
            ca = trustme.CA()
            self.ca_bundle = str(Path(self._tmpdir) / "sandbox-ca.pem")
            ca.cert_pem.write_to_path(self.ca_bundle)
        else:
            ca, self.ca_bundle = _kept_ca(Path(self.ca_dir))
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(tls)
        try:
            self._server = _TLSServer(self.host, self.port, self._wsgi, tls)
        except SystemExit:  # werkzeug exits the process when it cannot bind: a library must not
            raise OSError(f"sandbox: cannot listen on {self.host}:{self.port}") from None
        self.port = self._server.server_port
        self.url = f"https://{self.host}:{self.port}"
        if self.notify is not None:
            self.notifier = Notifier(self.notify, seed=self.seed, base_url=self.url,
                                     dataverse_org=_dataverse_org(self.seed),
                                     salesforce_org_id=ORG_ID).start()
        self.context = SandboxContext(self.url, self.seed, self.counters, self.faults,
                                      self.clock, self.token_ttl, self.notifier)
        self.sides = self._build_sides()
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"sandbox-{self.port}", daemon=True)
        self._thread.start()

    def _build_sides(self) -> list[Side]:
        sides: list[Side] = []
        assert self.context is not None
        if "salesforce" in self.side_names:
            self.salesforce = SalesforceSide(self.context, seed=self.seed, accounts=self.accounts,
                                             quotes=self.quotes, api_limit=self.api_limit,
                                             credentials=self.credentials)
            sides.append(self.salesforce)
        if "dataverse" in self.side_names:
            self.dataverse = DataverseSide(self.context, seed=self.seed, accounts=self.accounts)
            sides.append(self.dataverse)
        return sides

    def stop(self) -> None:
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is not None:
            if thread is not None:  # shutdown() waits for serve_forever: only if it runs
                server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        notifier, self.notifier = self.notifier, None
        if notifier is not None:
            notifier.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Every side back to its seeded state; counters, faults and clock cleared; change
        events not yet sent forgotten and their counters cleared."""
        for side in self.sides:
            side.reset()
        if self.notifier is not None:
            self.notifier.reset()
        self.counters.reset()
        self.faults.clear()
        self.clock.reset()

    def session(self) -> Any:
        """A requests Session that trusts this sandbox's CA (whatever the environment says)."""
        from .tls import CABundleSession

        return CABundleSession(self.ca_bundle)

    def salesforce_client(self, version: str = "59.0") -> Any:
        """A simple-salesforce client on this sandbox with a fresh session token."""
        from simple_salesforce.api import Salesforce

        if self.salesforce is None:
            raise RuntimeError("this sandbox does not serve Salesforce")
        return Salesforce(instance_url=self.url, session_id=self.salesforce.issue_token(),
                          session=self.session(), version=version)

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except DropConnection:
            _drop(environ.get("werkzeug.socket"))
            raise ConnectionAbortedError("sandbox fault: connection dropped") from None
        except Exception:
            log.exception("sandbox: %s %s failed", request.method, request.path)
            response = Response('{"error": "internal sandbox error"}', status=500,
                                content_type="application/json")
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        if request.path == "/__admin__" or request.path.startswith("/__admin__/"):
            return admin_api.handle(self, request)
        for side in self.sides:
            if side.matches(request.path):
                return side.handle(request)
        return Response('{"error": "not found"}', status=404, content_type="application/json")


def _dataverse_org(seed: int) -> dict[str, str]:
    """The Dataverse org's ids as WhoAmI answers them (the webhook context carries them)."""
    from .dataverse.ids import guid_of, salt

    return {"organization_id": guid_of(salt(seed, "org")),
            "business_unit_id": guid_of(salt(seed, "bu")),
            "organization_name": f"sandbox{seed}"}


def _kept_ca(directory: Path) -> tuple[trustme.CA, str]:
    """The CA kept in `directory` (made and written there on the first start)."""
    cert, key = directory / "sandbox-ca.pem", directory / "sandbox-ca.key"
    if cert.exists() and key.exists():
        return trustme.CA.from_pem(cert.read_bytes(), key.read_bytes()), str(cert)
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(ca.private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(cert))
    return ca, str(cert)


def _drop(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def serve_forever(port: int = 8443, seed: int = 0, accounts: int = 1000,
                  stop: threading.Event | None = None, quotes: int | None = None,
                  sides: Iterable[str] = ("salesforce", "dataverse"), ca_dir: str | None = None,
                  on_ready: Callable[[Sandbox], None] | None = None,
                  notify: NotifyConfig | None = None) -> None:
    """Run a sandbox until interrupted (or `stop` is set), printing how to reach it.

    The first two lines are for programs too (`remote.RemoteSandbox` reads them): the base URL
    after "sandbox CRM at " and the CA bundle's path after "CA bundle:"; the last line
    (admin) is printed once the server answers, after `on_ready` (e.g. a config writer) ran."""
    with Sandbox(port=port, seed=seed, accounts=accounts, quotes=quotes,
                 sides=sides, ca_dir=ca_dir, notify=notify) as sandbox:
        creds = sandbox.salesforce.credentials if sandbox.salesforce else Credentials()
        rows = f"{accounts} accounts" + ("" if quotes is None else f", {quotes} quotes")
        print(f"sandbox CRM at {sandbox.url} (seed {seed}, {rows})")
        print(f"  CA bundle:            {sandbox.ca_bundle}")
        if sandbox.salesforce is not None:
            print(f"  Salesforce instance:  {sandbox.url}  "
                  f"token: {sandbox.url}/services/oauth2/token")
            print(f"    client_id={creds.client_id} client_secret={creds.client_secret}")
            print(f"    username={creds.username} password={creds.password} "
                  f"security_token={creds.security_token}")
        if sandbox.dataverse is not None:
            print(f"  Dataverse:            {sandbox.url}/api/data/v9.2/")
            describe = getattr(sandbox.dataverse, "describe", None)
            if callable(describe):
                print(f"    {describe()}")
        if sandbox.notify is not None:
            targets = [f"{k}={v}" for k in ("dataverse", "soap", "json")
                       if (v := sandbox.notify.target(k))]
            print(f"  change events to:     {' '.join(targets) or '(no target)'}")
        if on_ready is not None:
            on_ready(sandbox)
        print(f"  admin:                {sandbox.url}/__admin__/  (Ctrl-C to stop)", flush=True)
        waiter = stop or threading.Event()
        try:
            while not waiter.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
