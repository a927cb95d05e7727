"""The test suite: real servers on loopback, real packaged models (docs/testing.md)."""
