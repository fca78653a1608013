"""Benchmarks of the CommBox pipeline against the API's limit and dlt's `rest_api` source (issue 6).

`make bench` (or `python -m bench`) writes `bench/results.md` and `bench/results.json`;
`make bench-quick` runs a small version. See `bench/README.md`.
"""
