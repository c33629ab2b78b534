//! Adversarial tests of the sinks: a full disk, a sink that fails mid-run, killed runs and appends; the stats must match the files.
