"""Compatibility for callers written before ``load_settings`` checked ``[sync]`` and the
connections itself: both are typed parts of ``Settings`` now (``config.settings``).

Delete this module once its callers read ``settings.sync`` and ``settings.connections``.
"""
from __future__ import annotations

from collections.abc import Mapping

from config.settings import Settings, SyncSettings
from connectors.settings import ConnectionSettings

__all__ = ["SyncSettings", "connections", "sync_settings"]


def sync_settings(settings: Settings) -> SyncSettings:
    return settings.sync


def connections(settings: Settings) -> Mapping[str, ConnectionSettings]:
    return settings.connections
