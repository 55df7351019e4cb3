"""Dashboards as code: Grafana dashboards and alert rules over the Redis read model, generated from the key schema."""
