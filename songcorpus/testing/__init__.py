"""Test infrastructure that ships with the package so the suite, the benchmarks and a user can use it: the lock
check (a pytest plugin: the venv against uv.lock, before anything imports torch) and a local multi-node Ray cluster
on 127.0.0.1. Nothing in the curation job or the trainer imports it."""
