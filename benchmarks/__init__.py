"""Benchmarks behind the README's performance figures. Run all: `make bench`."""
