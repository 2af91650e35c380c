"""Hang guards for the tests' child processes and waits: never a timing.

A test that starts a process or waits for an event must not hang CI forever, but a clock must not fail a correct
program on a loaded machine either (a 2-core CI box running two suites' worth of child processes, issue 27: one
inference child ran past a 300 s limit there). Every timeout and deadline in the suite is therefore this one
guard, far above the expected time: the slowest child process measured here takes about 60 s on an idle 2-core
machine and up to about 3x that under load, so 30 minutes is more than ten times the worst case seen. Speeds are
measured by the benchmarks (``benchmarks/``), never asserted by a test.
"""

HANG_GUARD_S = 1800.0
