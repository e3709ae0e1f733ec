//! Sweep expansion: grid (cartesian product), random (seeded draws) and zip (paired lists).
//! A point is the list of (dotted key, value) assignments it makes, keys in sorted order. A
//! `tpe` sweep expands to no point here: its trials are proposed one batch at a time from the
//! results of the earlier ones (`plan::search`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::recipe::{Distribution, SweepConfig, SweepMode, SweepValues};

/// One sweep point: dotted key -> value, keys sorted.
pub type Point = Vec<(String, toml::Value)>;

/// Expands a (validated) sweep into its points. No sweep: one empty point.
pub fn expand(sweep: Option<&SweepConfig>) -> Vec<Point> {
    let Some(s) = sweep else {
        return vec![Vec::new()];
    };
    match s.mode {
        SweepMode::Grid => grid(s),
        SweepMode::Zip => zip(s),
        SweepMode::Random => random(s),
        SweepMode::Tpe => Vec::new(),
    }
}

fn list(v: &SweepValues) -> &[toml::Value] {
    match v {
        SweepValues::List(l) => l,
        SweepValues::Distribution(Distribution::Choice(c)) => c,
        SweepValues::Distribution(_) => &[],
    }
}

fn grid(s: &SweepConfig) -> Vec<Point> {
    let mut points: Vec<Point> = vec![Vec::new()];
    for (key, values) in &s.params {
        let mut next = Vec::new();
        for p in &points {
            for v in list(values) {
                let mut q = p.clone();
                q.push((key.clone(), v.clone()));
                next.push(q);
            }
        }
        points = next;
    }
    points
}

fn zip(s: &SweepConfig) -> Vec<Point> {
    let n = s.params.values().map(|v| list(v).len()).min().unwrap_or(0);
    (0..n)
        .map(|i| {
            s.params
                .iter()
                .map(|(k, v)| (k.clone(), list(v)[i].clone()))
                .collect()
        })
        .collect()
}

fn random(s: &SweepConfig) -> Vec<Point> {
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    (0..s.trials.unwrap_or(0))
        .map(|_| {
            s.params
                .iter()
                .map(|(k, v)| (k.clone(), draw(v, &mut rng)))
                .collect()
        })
        .collect()
}

fn draw(v: &SweepValues, rng: &mut ChaCha8Rng) -> toml::Value {
    match v {
        SweepValues::List(l) | SweepValues::Distribution(Distribution::Choice(l)) => {
            l[rng.random_range(0..l.len())].clone()
        }
        SweepValues::Distribution(Distribution::Uniform([a, b])) => {
            toml::Value::Float(a + (b - a) * rng.random::<f64>())
        }
        SweepValues::Distribution(Distribution::Loguniform([a, b])) => {
            let (la, lb) = (a.ln(), b.ln());
            toml::Value::Float((la + (lb - la) * rng.random::<f64>()).exp())
        }
        SweepValues::Distribution(Distribution::Int([a, b])) => {
            toml::Value::Integer(rng.random_range(*a..=*b))
        }
    }
}

/// The values of one swept key worth checking on their own: every listed value or choice, and
/// a distribution's bounds.
pub fn values_to_check(v: &SweepValues) -> Vec<toml::Value> {
    match v {
        SweepValues::List(l) | SweepValues::Distribution(Distribution::Choice(l)) => l.clone(),
        SweepValues::Distribution(
            Distribution::Uniform([a, b]) | Distribution::Loguniform([a, b]),
        ) => vec![toml::Value::Float(*a), toml::Value::Float(*b)],
        SweepValues::Distribution(Distribution::Int([a, b])) => {
            vec![toml::Value::Integer(*a), toml::Value::Integer(*b)]
        }
    }
}
