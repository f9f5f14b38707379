"""Commands and tools beyond training: conformance, verify, report, traffic, bench, the GPU check."""
