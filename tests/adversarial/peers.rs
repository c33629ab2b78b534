//! Adversarial tests of what flow talks to and shows: silent and hostile HTTP servers, the dashboard and metrics server, and item data on its way to a terminal or a log.
