//! `--metrics` (Prometheus text at /metrics) and `--dashboard` (a live
//! status page at /), served while the run lasts. (Being written.)

use std::net::SocketAddr;

use flow_runner::Monitor;

pub struct Server;

/// Binds the addresses asked for (one server when they are the same).
pub async fn start(
    _monitor: Monitor,
    _metrics: Option<SocketAddr>,
    _dashboard: Option<SocketAddr>,
) -> Result<Server, String> {
    Ok(Server)
}

impl Server {
    /// Stops serving: the process exits when the run ends.
    pub async fn stop(self) {}
}
