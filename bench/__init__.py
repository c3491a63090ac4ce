"""Benchmark harness: tokn-router against a direct connection and the floor (bench/README.md).

Run ``python -m bench`` (or ``nox -s bench``). Modules:

- :mod:`bench.fake_upstream`: the fast fake Copilot upstream (its own process, epoll)
- :mod:`bench.floor`: the floor relay (trio + h11 on both legs, nothing else)
- :mod:`bench.client`: the load client (its own process(es), epoll)
- :mod:`bench.procs`: spawning, cleaning up and measuring processes (``/proc``)
- :mod:`bench.phases`: what each phase runs, and the phase registry
- :mod:`bench.report`: statistics, figures, targets, the table
- :mod:`bench.run`: the command line and the orchestration
"""
