//! How many jobs a run's sweep makes, bounded before anything is expanded.
//!
//! A run's jobs are the points of its parameter space (the Cartesian product of its axes,
//! a zip group counting as one axis) times the stages of its pipelines. Four axes of 300
//! values are 8.1 billion points, which no machine can hold: the count is taken by checked
//! multiplication, without expanding anything, and a run past the lab's bound (`max_jobs`
//! in `[lab]`, [`DEFAULT_MAX_JOBS`] by default) is refused as an invalid lab.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Pipeline, Run};

/// The most jobs one run may expand to unless the lab says otherwise.
pub const DEFAULT_MAX_JOBS: u64 = 10_000_000;

/// The size of a run's sweep, and what it is made of.
#[derive(Debug, PartialEq, Eq)]
pub struct Size {
    /// Points × stages; `None` past `u64::MAX`.
    pub jobs: Option<u64>,
    /// Each axis (a zip group by its first axis) with its number of values.
    pub axes: Vec<(String, u64)>,
    pub stages: u64,
}

impl Size {
    pub fn of<'a>(run: &Run, pipelines: impl Fn(&str) -> Option<&'a Pipeline>) -> Size {
        let zipped: BTreeSet<&str> = run.zip.iter().flatten().map(String::as_str).collect();
        let len = |name: &str| match run.params.get(name) {
            Some(Value::Array(values)) => values.len() as u64,
            _ => 1,
        };
        let mut axes: Vec<(String, u64)> = run
            .zip
            .iter()
            .filter_map(|group| {
                let first = group.first()?;
                Some((format!("{} (zipped)", group.join("+")), len(first)))
            })
            .collect();
        axes.extend(
            run.params
                .iter()
                .filter(|(name, value)| value.is_array() && !zipped.contains(name.as_str()))
                .map(|(name, _)| (name.clone(), len(name))),
        );
        let stages: BTreeSet<&str> = run
            .pipelines
            .iter()
            .filter_map(|p| pipelines(p))
            .flat_map(|p| p.stages.iter().map(String::as_str))
            .collect();
        let stages = stages.len() as u64;
        let jobs = axes
            .iter()
            .try_fold(stages, |jobs, (_, values)| jobs.checked_mul(*values));
        Size { jobs, axes, stages }
    }

    /// `a: 300 × b: 300, 2 stages`.
    pub fn describe(&self) -> String {
        let axes: Vec<String> = self
            .axes
            .iter()
            .map(|(name, values)| format!("{name}: {values}"))
            .collect();
        let axes = if axes.is_empty() {
            "no axes".to_string()
        } else {
            format!("axes {}", axes.join(" × "))
        };
        format!("{axes}, {} stage(s)", self.stages)
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(params: Value, zip: Vec<Vec<&str>>) -> Run {
        Run {
            name: "r".into(),
            pipelines: vec!["p".into()],
            params: serde_json::from_value(params).unwrap(),
            zip: zip
                .into_iter()
                .map(|g| g.into_iter().map(String::from).collect())
                .collect(),
        }
    }

    fn pipeline() -> Pipeline {
        Pipeline {
            name: "p".into(),
            stages: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn axes_multiply_zip_groups_count_once_stages_multiply() {
        let p = pipeline();
        let size = Size::of(
            &run(
                json!({"a": [1, 2], "b": [1, 2], "s": [1, 2, 3], "c": 7}),
                vec![vec!["a", "b"]],
            ),
            |_| Some(&p),
        );
        assert_eq!(size.jobs, Some(2 * 3 * 2));
        assert_eq!(size.describe(), "axes a+b (zipped): 2 × s: 3, 2 stage(s)");
    }

    #[test]
    fn an_overflowing_count_is_none() {
        let p = pipeline();
        let axis: Vec<u32> = (0..70_000).collect();
        let params = json!({"a": axis, "b": axis, "c": axis, "d": axis});
        let size = Size::of(&run(params, vec![]), |_| Some(&p));
        assert_eq!(size.jobs, None);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(8_100_000_000), "8,100,000,000");
    }
}
