//! Branin on x in [-5, 10], y in [0, 15] (minimum 0.397887), and one search of it through a
//! sampler: the yardstick TPE is measured on (tests/tpe_branin.rs, examples/tpe_branin.rs).

use runner::plan::sampler::{Outcome, Param, Sampler, Space, Trial};

pub fn branin(x: f64, y: f64) -> f64 {
    use std::f64::consts::PI;
    let (a, b, c) = (1.0, 5.1 / (4.0 * PI * PI), 5.0 / PI);
    let (r, s, t) = (6.0, 10.0, 1.0 / (8.0 * PI));
    a * (y - b * x * x + c * x - r).powi(2) + s * (1.0 - t) * x.cos() + s
}

pub fn space() -> Space {
    vec![
        (
            "x".into(),
            Param::Float {
                low: -5.0,
                high: 10.0,
                log: false,
            },
        ),
        (
            "y".into(),
            Param::Float {
                low: 0.0,
                high: 15.0,
                log: false,
            },
        ),
    ]
}

/// The best value `trials` sequential trials of `sampler` find (each sees all before it).
pub fn best_of(sampler: &dyn Sampler, trials: usize) -> f64 {
    let mut history: Vec<Trial> = Vec::new();
    let mut best = f64::INFINITY;
    for number in 0..trials {
        let params = sampler.propose(number, &history);
        let value = branin(params[0], params[1]);
        best = best.min(value);
        history.push(Trial {
            number,
            params,
            outcome: Outcome::Complete(value),
        });
    }
    best
}
