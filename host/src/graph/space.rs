//! The parameter space of a run: axes, zip groups, Cartesian product.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::lab::Run;

/// One assignment of every run parameter, axes resolved to a single value, borrowed from
/// the run (a large sweep's points are many).
pub type Point<'a> = BTreeMap<&'a str, &'a Value>;

/// Every point of the run's parameter space, in axis order (the last axis varies fastest).
pub fn points(run: &Run) -> Vec<Point<'_>> {
    let zipped: std::collections::BTreeSet<&str> =
        run.zip.iter().flatten().map(String::as_str).collect();
    // An axis group is a list of rows; each row assigns one or more parameters.
    let mut groups: Vec<Vec<Vec<(&str, &Value)>>> = Vec::new();
    for group in &run.zip {
        let len = group
            .first()
            .map_or(0, |axis| values(&run.params[axis]).len());
        groups.push(
            (0..len)
                .map(|i| {
                    group
                        .iter()
                        .map(|axis| (axis.as_str(), &values(&run.params[axis])[i]))
                        .collect()
                })
                .collect(),
        );
    }
    for (name, value) in &run.params {
        if let Value::Array(list) = value
            && !zipped.contains(name.as_str())
        {
            groups.push(list.iter().map(|v| vec![(name.as_str(), v)]).collect());
        }
    }

    let base: Point = run
        .params
        .iter()
        .filter(|(_, v)| !v.is_array())
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let mut points = vec![base];
    for group in groups {
        points = points
            .iter()
            .flat_map(|point| {
                group.iter().map(move |row| {
                    let mut next = point.clone();
                    next.extend(row.iter().copied());
                    next
                })
            })
            .collect();
    }
    points
}

fn values(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(params: Value, zip: Vec<Vec<&str>>) -> Run {
        Run {
            name: "r".into(),
            pipelines: vec![],
            params: serde_json::from_value(params).unwrap(),
            zip: zip
                .into_iter()
                .map(|g| g.into_iter().map(String::from).collect())
                .collect(),
        }
    }

    #[test]
    fn axes_multiply_and_scalars_stay() {
        let run = run(json!({"a": [1, 2], "b": ["x", "y", "z"], "c": 7}), vec![]);
        let pts = points(&run);
        assert_eq!(pts.len(), 6);
        assert!(pts.iter().all(|p| *p["c"] == json!(7)));
        let owned: BTreeMap<&str, Value> = pts[1].iter().map(|(k, v)| (*k, (*v).clone())).collect();
        assert_eq!(
            serde_json::to_value(owned).unwrap(),
            json!({"a": 1, "b": "y", "c": 7})
        );
    }

    #[test]
    fn zipped_axes_advance_together() {
        let run = run(
            json!({"a": [1, 2], "b": [10, 20], "s": [0, 1, 2]}),
            vec![vec!["a", "b"]],
        );
        let pts = points(&run);
        assert_eq!(pts.len(), 6);
        assert!(
            pts.iter()
                .all(|p| p["b"].as_i64().unwrap() == 10 * p["a"].as_i64().unwrap())
        );
    }

    #[test]
    fn no_axes_is_one_point() {
        assert_eq!(points(&run(json!({}), vec![])).len(), 1);
    }
}
