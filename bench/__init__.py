"""The fraudmesh benchmark: drives a running stack over HTTP (wrk) and NATS (asyncio) and writes reports.

Run `python -m bench --name <name>` against a stack started with `fraudmesh up`, or `python -m bench --up`
to start one and stop it afterwards. Reports go to `bench/results/<name>.json` and `.md`.
"""
