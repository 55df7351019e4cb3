"""Persistence: report stores, snapshot jobs and their scheduling."""

from .store import ReportStore, open_store

__all__ = ["ReportStore", "open_store"]
