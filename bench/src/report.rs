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
    pub value: f64,
    pub unit: &'static str,
}

impl Report {
    pub fn new(scenario: &'static str, target: &str, parameters: serde_json::Value) -> Report {
        Report { scenario, target: target.to_owned(), parameters, figures: Vec::new(), failures: Vec::new() }
    }

    pub fn figure(&mut self, name: &'static str, value: f64, unit: &'static str) {
        self.figures.push(Figure { name, value, unit });
    }

    pub fn fail(&mut self, why: String) {
        self.failures.push(why);
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.name == name).map(|f| f.value)
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut text = format!("{} against {}\n  {}\n", self.scenario, self.target, self.parameters);
        for figure in &self.figures {
            text.push_str(&format!("  {:<28} {:>14.2} {}\n", figure.name, figure.value, figure.unit));
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
