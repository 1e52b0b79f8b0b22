"""The test suite. A package so that tests and benches import their helpers as `tests.support`."""
