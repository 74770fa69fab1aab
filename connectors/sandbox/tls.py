"""HTTPS client plumbing the connectors and tests reuse: a requests Session that trusts one CA.

Rules this module keeps:
- The configured CA bundle wins over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE. requests lets those
  variables override `Session.verify` (they are merged per request when verify is None/True), so
  the session resolves verify itself in `merge_environment_settings`. An explicit per-request
  `verify=` (a path or False) is still honoured.
- Every request gets a timeout unless the caller passes one: nothing waits forever.
"""

from __future__ import annotations

from typing import Any

import requests

DEFAULT_TIMEOUT = (5.0, 60.0)  # (connect, read) seconds


class CABundleSession(requests.Session):
    """A Session that verifies TLS against `ca_bundle` whatever the environment says."""

    def __init__(self, ca_bundle: str,
                 timeout: float | tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        self.ca_bundle = ca_bundle
        self.verify = ca_bundle
        self.default_timeout = timeout

    def request(self, method: str, url: str, *args: Any,  # type: ignore[override]
                **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().request(method, url, *args, **kwargs)

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        if verify is None or verify is True:
            verify = self.ca_bundle
        return super().merge_environment_settings(url, proxies, stream, verify, cert)
