"""Unit tests of the benchmarks' own arithmetic (collected by `make test`; no servers)."""
