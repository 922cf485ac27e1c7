"""Fault injection and bad input, one module per theme; each case is named after its fault and checks
both the behaviour (status, exit code, message) and that nothing was lost (row counts and checksums
taken before and after). Shared checks live in `tests.faults.checks`."""
