//! The end-of-run report as a table for people.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use flow_runner::stats::Report;

/// The stats table, the most frequent errors and the bottleneck line.
pub fn render(report: &Report) -> String {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "stage",
            "type",
            "workers",
            "in",
            "out",
            "errors",
            "retries",
            "dropped",
            "dead",
            "busy",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "queue",
            "full",
            "rate wait",
            "bp wait",
        ]);
    for s in &report.stages {
        let queue = s
            .queue
            .map_or_else(|| "-".to_string(), |q| format!("{}/{}", q.peak, q.capacity));
        let full = s
            .queue
            .map_or_else(|| "-".to_string(), |q| format!("{:.0}%", q.full_pct));
        table.add_row([
            s.name.clone(),
            s.type_name.clone(),
            s.workers.to_string(),
            s.items_in.to_string(),
            s.items_out.to_string(),
            s.errors.to_string(),
            s.retries.to_string(),
            s.dropped.to_string(),
            s.dead_lettered.to_string(),
            format!("{:.0}%", s.busy_pct),
            ms(s.latency_ms.p50),
            ms(s.latency_ms.p90),
            ms(s.latency_ms.p99),
            ms(s.latency_ms.max),
            queue,
            full,
            format!("{:.1}s", s.wait_s.rate_limit),
            format!("{:.1}s", s.wait_s.backpressure),
        ]);
    }
    for i in 2..18 {
        if let Some(col) = table.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    let failed: u64 = report
        .stages
        .iter()
        .map(|s| s.dropped + s.dead_lettered)
        .sum();
    let status = match report.status {
        flow_runner::Status::Ok if failed > 0 => format!("finished, {failed} items failed"),
        flow_runner::Status::Ok => "ok".into(),
        flow_runner::Status::Running => "running".into(),
        flow_runner::Status::Failed => "FAILED".into(),
        flow_runner::Status::Interrupted => "interrupted".into(),
    };
    let mut out = format!(
        "{table}\npipeline {}: {status} in {:.2}s, {:.0} items/s\n",
        report.pipeline, report.elapsed_s, report.items_per_s
    );
    if let Some(failure) = &report.failure {
        out += &format!("stopped by: {failure}\n");
    }
    if !report.errors.is_empty() {
        out += "errors:\n";
        for e in &report.errors {
            out += &format!("  {:>7}× {}: {}\n", e.count, e.stage, e.message);
            if !e.sample.is_empty() {
                out += &format!("           e.g. {}\n", e.sample);
            }
        }
    }
    if let Some(b) = &report.bottleneck {
        out += &format!("bottleneck: {}: {}\n", b.stage, b.reason);
    }
    out
}

/// Milliseconds with three significant digits (`0.0123`, `4.56`, `789`).
fn ms(x: f64) -> String {
    if x == 0.0 {
        return "-".into();
    }
    let decimals = (2 - x.log10().floor() as i32).clamp(0, 6) as usize;
    format!("{x:.decimals$}")
}
