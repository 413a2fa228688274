//! A scenario run against MultiChat and against the bare baseline in turn, reported side by side with each
//! figure's ratio to the baseline's: the figure that survives a change of machine or of sitting.

use serde::Serialize;

use crate::report::{median_and_spread, Figure, Report};

#[derive(Debug, Serialize)]
pub struct Comparison {
    /// The server's figures (median and spread over its runs).
    pub server: Report,
    /// The baseline's, from the runs taken between the server's.
    pub baseline: Report,
    /// Each figure the two share, as server ÷ baseline: the median of the ratios of each pair of runs taken one
    /// right after the other, so that a machine drifting over the sitting moves both sides of a ratio alike.
    pub ratios: Vec<Figure>,
}

impl Comparison {
    /// Pairs of runs, `(server, baseline)`, each pair taken one right after the other.
    pub fn of_pairs(pairs: Vec<(Report, Report)>) -> Option<Comparison> {
        let mut ratios: Vec<Figure> = Vec::new();
        if let Some((server, _)) = pairs.first() {
            for figure in &server.figures {
                let values: Vec<f64> = pairs
                    .iter()
                    .filter_map(|(server, baseline)| Some(server.get(figure.name)? / baseline.get(figure.name)?))
                    .filter(|ratio| ratio.is_finite())
                    .collect();
                if values.is_empty() {
                    continue;
                }
                let (value, spread) = median_and_spread(values);
                ratios.push(Figure { name: figure.name, value, unit: "×", spread });
            }
        }
        let (servers, baselines) = pairs.into_iter().unzip();
        Some(Comparison { server: Report::of_runs(servers)?, baseline: Report::of_runs(baselines)?, ratios })
    }

    /// Whether both sides delivered everything and kept everyone connected.
    pub fn passed(&self) -> bool {
        self.server.failures.is_empty() && self.baseline.failures.is_empty()
    }

    /// The human summary: one line per figure, the server's median, the baseline's, and the ratio.
    pub fn summary(&self) -> String {
        let runs = self.server.parameters.get("runs").and_then(|r| r.as_u64()).unwrap_or(1);
        let mut text = format!(
            "{} against {}\n  and against {}, {runs} run(s) each, alternating\n  {}\n",
            self.server.scenario, self.server.target, self.baseline.target, self.server.parameters
        );
        text.push_str(&format!(
            "  {:<28} {:>14} {:>14} {:<14}{}\n",
            "(medians)", "server", "baseline", "", "server ÷ baseline (per pair: median; lowest – highest)"
        ));
        for figure in &self.server.figures {
            let baseline = self.baseline.get(figure.name).map_or("—".to_owned(), |value| format!("{value:.2}"));
            text.push_str(&format!(
                "  {:<28} {:>14.2} {:>14} {:<14}",
                figure.name, figure.value, baseline, figure.unit
            ));
            if let Some(ratio) = self.ratios.iter().find(|r| r.name == figure.name) {
                text.push_str(&format!("{:.2}", ratio.value));
                if let Some((low, high)) = ratio.spread {
                    text.push_str(&format!(" ({low:.2} – {high:.2})"));
                }
            }
            text.push('\n');
        }
        if self.passed() {
            text.push_str("  OK: nothing lost, nobody disconnected\n");
        }
        for (side, report) in [("server", &self.server), ("baseline", &self.baseline)] {
            for failure in &report.failures {
                text.push_str(&format!("  FAILED ({side}): {failure}\n"));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, p99: f64, errors: f64) -> Report {
        let mut report = Report::new("fanout", target, serde_json::json!({}));
        report.figure("latency_p99", p99, "ms");
        report.figure("errors", errors, "errors");
        report
    }

    #[test]
    fn each_ratio_is_the_median_of_the_pairs_ratios() {
        // A machine slowing down over the sitting: each pair's ratio is 1.5, whatever the medians of each side.
        let pairs = vec![
            (run("server", 15.0, 0.0), run("baseline", 10.0, 0.0)),
            (run("server", 60.0, 0.0), run("baseline", 40.0, 0.0)),
            (run("server", 30.0, 0.0), run("baseline", 20.0, 0.0)),
        ];
        let comparison = Comparison::of_pairs(pairs).unwrap();
        let p99 = comparison.ratios.iter().find(|r| r.name == "latency_p99").unwrap();
        assert_eq!((p99.value, p99.spread), (1.5, Some((1.5, 1.5))));
        assert_eq!(
            (comparison.server.get("latency_p99"), comparison.baseline.get("latency_p99")),
            (Some(30.0), Some(20.0))
        );
        assert!(comparison.ratios.iter().all(|r| r.name != "errors"), "0 ÷ 0 is no ratio");
        let summary = comparison.summary();
        assert!(summary.contains("1.50 (1.50 – 1.50)") && summary.contains("3 run(s) each"), "{summary}");
    }

    #[test]
    fn a_failure_on_either_side_fails_the_comparison() {
        let mut baseline = run("baseline", 10.0, 0.0);
        baseline.fail("2 deliveries missing".into());
        let comparison = Comparison::of_pairs(vec![(run("server", 15.0, 0.0), baseline)]).unwrap();
        assert!(!comparison.passed());
        assert!(comparison.summary().contains("FAILED (baseline): 2 deliveries missing"), "{}", comparison.summary());
    }
}
