"""Helpers for tests and benches, kept out of the product packages.

- `fakehttp`: the one configurable fake HTTP server (SaaS fakes, sinks, scrape targets).
- `servers`: real Prometheus / Alertmanager processes on free loopback ports.
- `receiver`: Alertmanager-shaped payloads, a receiver config, a real receiver process.
- `demo`: real demo service and app-exporter processes.
- `harness`: drive a whole native stack (`opsstack up`) from outside; `wait_for`.

Importable from the repository root (pytest puts it on sys.path because `tests` is a package;
the bench scripts insert it themselves).
"""
