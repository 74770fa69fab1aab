"""The e2e test world: a sandbox, a database, a config pointing at both, and the worker."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class World:
    def __init__(self, sbx: Any, engine: Any, tmp: Path, extra: str = "") -> None:
        from config.settings import load_settings
        from connectors.registry import build_connector
        from jobs.cli.demo_crm import sandbox_config
        from jobs.worker import Worker

        self.sbx, self.engine, self.tmp = sbx, engine, tmp
        text, self.env = sandbox_config(sbx, str(engine.url), extra=extra)
        self.config = tmp / "ledgerbridge.toml"
        self.config.write_text(text, encoding="utf-8")
        os.environ.update(self.env)
        self.settings = load_settings(self.config)
        self.worker = Worker(engine, self.settings, connector_factory=lambda s: build_connector(
            s, sleep=lambda _s: None))

    def cycle(self, name: str | None = None, **kw: Any) -> list[Any]:
        names = [name] if name else list(self.worker.connections)
        return [self.worker.sync_connection(n, self.worker.options("test", **kw), wait=True)
                for n in names]

    def sf(self, action: str, **payload: Any) -> Any:
        return self.sbx.salesforce.admin(action, payload)

    def dv(self, action: str, **payload: Any) -> Any:
        return self.sbx.dataverse.admin(action, payload)

    def calls(self, crm: str, endpoint: str, method: str | None = None) -> int:
        return int(self.sbx.counters.get(crm, endpoint, method))
