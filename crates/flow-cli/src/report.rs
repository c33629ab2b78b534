//! The end-of-run report as a table for people.
//!
//! Error messages and sample items quote item data: every text in the
//! report goes through [`flow_core::text::for_display`] (control
//! characters escaped, credentials redacted), so a record cannot paint
//! over the table, retitle the terminal or leave a password in a CI log.

use flow_core::text::for_display;

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
            for_display(&s.name).into_owned(),
            for_display(&s.type_name).into_owned(),
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
        for_display(&report.pipeline),
        report.elapsed_s,
        report.items_per_s
    );
    if let Some(failure) = &report.failure {
        out += &format!("stopped by: {}\n", for_display(failure));
    }
    if !report.errors.is_empty() {
        out += "errors:\n";
        for e in &report.errors {
            out += &format!(
                "  {:>7}× {}: {}\n",
                e.count,
                for_display(&e.stage),
                for_display(e.template.as_ref().unwrap_or(&e.message))
            );
            if e.template.is_some() {
                out += &format!("           first: {}\n", for_display(&e.message));
            }
            if !e.sample.is_empty() {
                out += &format!("           e.g. {}\n", for_display(&e.sample));
            }
        }
    }
    let left = report.errors_left_out;
    if left.errors > 0 {
        out += &format!(
            "  …and {} more group{} ({} error{})\n",
            left.groups,
            if left.groups == 1 { "" } else { "s" },
            left.errors,
            if left.errors == 1 { "" } else { "s" }
        );
    }
    if let Some(b) = &report.bottleneck {
        out += &format!(
            "bottleneck: {}: {}\n",
            for_display(&b.stage),
            for_display(&b.reason)
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use flow_runner::stats::ErrorReport;

    #[test]
    fn item_data_in_the_report_is_escaped_and_redacted() {
        let report = Report {
            pipeline: "p".into(),
            status: flow_runner::Status::Failed,
            failure: Some("stage \"x\": item failed: \x1b[2J\x1b[H".into()),
            elapsed_s: 1.0,
            items_per_s: 1.0,
            stages: Vec::new(),
            errors: vec![ErrorReport {
                stage: "fetch".into(),
                message: "GET https://u:hunter2@h/: 404\r\x1b[32mok".into(),
                template: None,
                examples: Vec::new(),
                count: 2,
                sample: "\"\u{9b}31m https://u:hunter2@h/\"".into(),
            }],
            errors_left_out: Default::default(),
            bottleneck: None,
        };
        let text = render(&report);
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        assert!(
            !text.contains('\u{9b}') && !text.contains("hunter2"),
            "{text:?}"
        );
        assert!(text.contains("stopped by: stage \"x\": item failed: \\x1b[2J\\x1b[H\n"));
        assert!(text.contains("2× fetch: GET https://***@h/: 404\\r\\x1b[32mok\n"));
        assert!(text.contains("e.g. \"\\u{9b}31m https://***@h/\"\n"));
    }

    #[test]
    fn varied_groups_show_their_template_and_the_rest_is_counted() {
        let report = Report {
            pipeline: "p".into(),
            status: flow_runner::Status::Ok,
            failure: None,
            elapsed_s: 1.0,
            items_per_s: 1.0,
            stages: Vec::new(),
            errors: vec![ErrorReport {
                stage: "fetch".into(),
                message: "GET https://h/p/1: 404".into(),
                template: Some("GET https://h/…: N".into()),
                examples: Vec::new(),
                count: 900,
                sample: String::new(),
            }],
            errors_left_out: flow_runner::stats::LeftOut {
                groups: 3,
                errors: 7,
            },
            bottleneck: None,
        };
        let text = render(&report);
        assert!(
            text.contains(
                "    900× fetch: GET https://h/…: N\n           first: GET https://h/p/1: 404\n"
            ),
            "{text}"
        );
        assert!(text.contains("  …and 3 more groups (7 errors)\n"), "{text}");
    }
}
