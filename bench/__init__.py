"""The benchmark harness: `python -m bench all` (or one scenario) runs the real processes against
PostgreSQL, Redis, Postfix's smtp-sink and the sandbox emulators, and prints each figure against the
baselines measured in the same invocation. bench/README.md says what each scenario measures.

The older single-file benches (plan_claim.py, schedule.py, supporter_import.py) still run as scripts.
"""
