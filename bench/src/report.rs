//! What a run found: figures with their units, the parameters, and what went wrong. Printed as a short
//! summary and written as JSON.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub target: String,
    pub parameters: serde_json::Value,
    /// `(name, value, unit)`, in the order they were measured.
    pub figures: Vec<Figure>,
    /// Missing deliveries, disconnections, errors: a run with any of these fails.
    pub failures: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Figure {
    pub name: &'static str,
    /// The measured value; over several runs, their median.
    pub value: f64,
    pub unit: &'static str,
    /// Over several runs: the lowest and the highest value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread: Option<(f64, f64)>,
}

impl Report {
    pub fn new(scenario: &'static str, target: &str, parameters: serde_json::Value) -> Report {
        Report { scenario, target: target.to_owned(), parameters, figures: Vec::new(), failures: Vec::new() }
    }

    pub fn figure(&mut self, name: &'static str, value: f64, unit: &'static str) {
        self.figures.push(Figure { name, value, unit, spread: None });
    }

    pub fn fail(&mut self, why: String) {
        self.failures.push(why);
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.name == name).map(|f| f.value)
    }

    /// Several runs of one scenario as one report: each figure's median and spread; every run's failures.
    pub fn of_runs(mut runs: Vec<Report>) -> Option<Report> {
        let count = runs.len();
        let mut combined = runs.pop()?;
        if count == 1 {
            return Some(combined);
        }
        for figure in &mut combined.figures {
            let mut values: Vec<f64> = runs.iter().filter_map(|r| r.get(figure.name)).collect();
            values.push(figure.value);
            (figure.value, figure.spread) = median_and_spread(values);
        }
        for (n, run) in runs.into_iter().enumerate() {
            combined.failures.extend(run.failures.into_iter().map(|f| format!("run {}: {f}", n + 1)));
        }
        if let serde_json::Value::Object(parameters) = &mut combined.parameters {
            parameters.insert("runs".into(), count.into());
        }
        Some(combined)
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut text = format!("{} against {}\n  {}\n", self.scenario, self.target, self.parameters);
        for figure in &self.figures {
            text.push_str(&format!("  {:<28} {:>14.2} {}", figure.name, figure.value, figure.unit));
            if let Some((low, high)) = figure.spread {
                text.push_str(&format!("  (median; {low:.2} – {high:.2})"));
            }
            text.push('\n');
        }
        if self.failures.is_empty() {
            text.push_str("  OK: nothing lost, nobody disconnected\n");
        }
        for failure in &self.failures {
            text.push_str(&format!("  FAILED: {failure}\n"));
        }
        text
    }
}

/// The median of `values` (the upper one of an even count; NaN for none) and, for more than one value, the
/// lowest and the highest.
pub fn median_and_spread(mut values: Vec<f64>) -> (f64, Option<(f64, f64)>) {
    values.sort_by(f64::total_cmp);
    let median = values.get(values.len() / 2).copied().unwrap_or(f64::NAN);
    let spread = (values.len() > 1).then(|| (values[0], values[values.len() - 1]));
    (median, spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p99: f64, failure: Option<&str>) -> Report {
        let mut report = Report::new("fanout", "x", serde_json::json!({}));
        report.figure("latency_p99", p99, "ms");
        report.failures.extend(failure.map(String::from));
        report
    }

    #[test]
    fn several_runs_report_the_median_the_spread_and_every_failure() {
        let combined = Report::of_runs(vec![run(40.0, None), run(90.0, Some("3 deliveries missing")), run(20.0, None)]);
        let combined = combined.unwrap();
        let p99 = &combined.figures[0];
        assert_eq!((p99.value, p99.spread), (40.0, Some((20.0, 90.0))));
        assert_eq!(combined.failures, ["run 2: 3 deliveries missing"]);
        assert!(combined.summary().contains("(median; 20.00 – 90.00)"), "{}", combined.summary());
    }
}
