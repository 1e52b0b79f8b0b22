"""The cost exporter and advice (docs/cost.md)."""
