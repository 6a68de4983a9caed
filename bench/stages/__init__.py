"""bench/run's stages, one module each, in the order of BENCHMARKS.md's sections:

  1. work.py        work per event: criterion (benches/request.rs), store stubbed out
  2. cold.py        cold start against a stand-in Runtime API and a stand-in S3
  2b. billed.py     billed time and CPU at 128 MB: a CPU quota, S3 behind TLS, four functions
  3. size.py        package size: the arm64 Lambda zip
  4. memory.py      RSS of the local HTTP mode under wrk
  5. throughput.py  wrk against mailhook and the provider's reference receiver
  6. cost.py        cost per million events, computed from stages 2 and 4
  7. compaction.py  one day in moto_server, before and after `mailhook compact`

Each has a `measure(...)` that returns what BENCHMARKS.md needs as plain JSON-able data;
bench/report.py turns that into the report."""
