"""The midnight correctness check: history sources, the recompute (the truth),
reconcile and repair, overview reports, and the per-tenant schedule."""
