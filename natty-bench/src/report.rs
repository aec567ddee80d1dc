//! One [`Comparison`] per scenario line: the samples of both sides, the `BENCH` line and the
//! table row built from them.

use std::fmt::Write as _;

/// Which direction of a measurement is better.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Better {
    /// Throughputs: more is better, the ratio is natty / baseline.
    Higher,
    /// Latencies and bytes: less is better, the ratio is baseline / natty.
    Lower,
}

/// What natty sets out to reach in a comparison (see natty-bench/README.md).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Goal {
    /// The ratio must reach this.
    RatioAtLeast(f64),
    /// natty's value must stay below this (in the comparison's unit).
    NattyBelow(f64),
    /// Reported only.
    None,
}

/// natty's and the baseline's samples for one scenario, from alternating runs.
#[derive(Debug)]
pub(crate) struct Comparison {
    pub(crate) scenario: String,
    pub(crate) unit: &'static str,
    pub(crate) better: Better,
    pub(crate) goal: Goal,
    pub(crate) natty: Vec<f64>,
    pub(crate) baseline: Vec<f64>,
    /// What the baseline is, for the table.
    pub(crate) baseline_is: &'static str,
}

impl Comparison {
    pub(crate) fn new(
        scenario: impl Into<String>,
        unit: &'static str,
        better: Better,
        goal: Goal,
        baseline_is: &'static str,
    ) -> Self {
        Self {
            scenario: scenario.into(),
            unit,
            better,
            goal,
            natty: Vec::new(),
            baseline: Vec::new(),
            baseline_is,
        }
    }

    /// The median of natty's samples (the p50 for latencies).
    pub(crate) fn natty_value(&self) -> f64 {
        median(&self.natty)
    }

    /// The median of the baseline's samples.
    pub(crate) fn baseline_value(&self) -> f64 {
        median(&self.baseline)
    }

    /// Above 1 when natty is better, whichever direction the unit runs.
    pub(crate) fn ratio(&self) -> f64 {
        let (natty, baseline) = (self.natty_value(), self.baseline_value());
        match self.better {
            Better::Higher => natty / baseline,
            Better::Lower => baseline / natty,
        }
    }

    /// Whether the goal is met; `None` when there is none.
    pub(crate) fn met(&self) -> Option<bool> {
        match self.goal {
            Goal::RatioAtLeast(goal) => Some(self.ratio() >= goal),
            Goal::NattyBelow(limit) => Some(self.natty_value() < limit),
            Goal::None => None,
        }
    }

    /// The machine-readable line, one per comparison, for scripts that collect runs.
    pub(crate) fn bench_line(&self) -> String {
        format!(
            "BENCH {} natty={} baseline={} unit={} ratio={:.3}",
            self.scenario,
            number(self.natty_value()),
            number(self.baseline_value()),
            self.unit,
            self.ratio()
        )
    }

    fn goal_text(&self) -> String {
        match self.goal {
            Goal::RatioAtLeast(goal) => format!("ratio >= {goal}"),
            Goal::NattyBelow(limit) => format!("natty < {} {}", number(limit), self.unit),
            Goal::None => "-".into(),
        }
    }
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if !n.is_multiple_of(2) => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Whole numbers for big values, three significant decimals for small ones.
fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

fn samples(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| number(*v))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The readable table: one row per comparison, then the samples each median came from.
pub(crate) fn table(comparisons: &[Comparison]) -> String {
    let mut rows = vec![[
        "scenario".to_string(),
        "natty".into(),
        "baseline".into(),
        "unit".into(),
        "ratio".into(),
        "goal".into(),
        "met".into(),
        "baseline is".into(),
    ]];
    for c in comparisons {
        let met = match c.met() {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        rows.push([
            c.scenario.clone(),
            number(c.natty_value()),
            number(c.baseline_value()),
            c.unit.into(),
            format!("{:.3}", c.ratio()),
            c.goal_text(),
            met.into(),
            c.baseline_is.into(),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
        }
    }
    let _ = writeln!(out, "\nsamples (natty | baseline), in run order:");
    let name_width = widths[0];
    for c in comparisons {
        let _ = writeln!(
            out,
            "  {:<name_width$} {} | {}",
            c.scenario,
            samples(&c.natty),
            samples(&c.baseline)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_above_one_when_natty_is_better_in_either_direction() {
        let mut throughput = Comparison::new("t", "msg/s", Better::Higher, Goal::None, "");
        throughput.natty = vec![200.0, 100.0, 300.0];
        throughput.baseline = vec![100.0];
        assert_eq!(throughput.ratio(), 2.0);

        let mut latency = Comparison::new("l", "ms", Better::Lower, Goal::NattyBelow(250.0), "");
        latency.natty = vec![10.0, 30.0];
        latency.baseline = vec![2000.0];
        assert_eq!(latency.ratio(), 100.0);
        assert_eq!(latency.met(), Some(true));
        assert_eq!(
            latency.bench_line(),
            "BENCH l natty=20.000 baseline=2000 unit=ms ratio=100.000"
        );
    }
}
