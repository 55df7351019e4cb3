"""Persistence: snapshots of live counters into the report store, reads that combine
Redis with the store, and the RQ entry points that run snapshots in the background."""
