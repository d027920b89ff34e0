"""oci-ref's benchmark harness: oci-ref against CNCF distribution, measured in one run
(bench/README.md). ``python bench/run.py`` is the command line; the modules, by concern:

- ``plan``: sizes and repetitions of a full and a quick run, units, names
- ``stats``: the arithmetic: percentiles, medians, ratios, ceilings, A/A noise, verdicts
- ``metrics``: what is read from /proc around a measurement (CPU, RSS, other load)
- ``servers``: spawning and stopping the servers measured (the only module that does)
- ``client``: the HTTP client and the registry operations the figures time
- ``limits``: the machine's own limits (hash, disk, fsync, loopback)
- ``load``: request-rate load generators (wrk, hey, a built-in asyncio one)
- ``runners``: the figures, run A/B interleaved
- ``environment``: what the run ran on
- ``report``: the results as markdown, and docs/benchmarks.md
- ``falcon_bare``: the bare Falcon app whose request rate is the framework's ceiling
"""
