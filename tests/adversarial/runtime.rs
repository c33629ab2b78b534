//! Adversarial tests of the runner: deep values, runaway expressions, timeouts, signals and drains, oversized settings.
