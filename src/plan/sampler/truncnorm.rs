//! The truncated normal distribution TPE's kernels use, in log space where tails need it (as
//! Optuna's `_truncnorm`): the standard normal's log CDF, the log mass between two points, the
//! log density, and draws by inverting the CDF. Bounds `a`, `b` are in standard units.

use std::f64::consts::{LN_2, PI, SQRT_2};

/// ln Phi(x), accurate in the far left tail.
pub fn log_ndtr(x: f64) -> f64 {
    if x > 6.0 {
        // Phi(x) = 1 - Phi(-x), Phi(-x) tiny
        return -0.5 * libm::erfc(x / SQRT_2);
    }
    if x > -20.0 {
        return (0.5 * libm::erfc(-x / SQRT_2)).ln();
    }
    // asymptotic series: Phi(x) ~ pdf(x) / -x * (1 - 1/x^2 + 3/x^4 - 15/x^6)
    let x2 = x * x;
    let series = 1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2);
    -0.5 * x2 - (-x).ln() - 0.5 * (2.0 * PI).ln() + series.ln()
}

/// ln(e^a + e^b).
fn log_sum(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// ln(e^a - e^b) for a >= b.
fn log_diff(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    a + (-(b - a).exp()).ln_1p()
}

/// ln(Phi(b) - Phi(a)), a <= b.
pub fn log_gauss_mass(a: f64, b: f64) -> f64 {
    if b <= 0.0 {
        log_diff(log_ndtr(b), log_ndtr(a))
    } else if a >= 0.0 {
        log_diff(log_ndtr(-a), log_ndtr(-b))
    } else {
        let tails = 0.5 * libm::erfc(-a / SQRT_2) + 0.5 * libm::erfc(b / SQRT_2);
        (-tails).ln_1p()
    }
}

/// The log density at `x` of a normal (`loc`, `scale`) truncated to [loc + a*scale, loc +
/// b*scale]; -inf outside.
pub fn logpdf(x: f64, a: f64, b: f64, loc: f64, scale: f64) -> f64 {
    let z = (x - loc) / scale;
    if z < a || z > b {
        return f64::NEG_INFINITY;
    }
    -0.5 * z * z - 0.5 * (LN_2 + PI.ln()) - log_gauss_mass(a, b) - scale.ln()
}

/// The point c in [a, b] with ln Phi(c) = `target` (bisection; ln Phi is increasing).
fn solve_log_ndtr(target: f64, mut lo: f64, mut hi: f64) -> f64 {
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if log_ndtr(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The quantile `q` (in [0, 1)) of the standard normal truncated to [a, b], in standard units
/// (Optuna's `ppf`: from the left for a < 0, else mirrored, for precision in the tails).
pub fn ppf(q: f64, a: f64, b: f64) -> f64 {
    let log_mass = log_gauss_mass(a, b);
    if a < 0.0 {
        let target = log_sum(log_ndtr(a), q.ln() + log_mass);
        solve_log_ndtr(target, a, b)
    } else {
        let target = log_sum(log_ndtr(-b), (-q).ln_1p() + log_mass);
        -solve_log_ndtr(target, -b, -a)
    }
}

/// A draw from the normal (`loc`, `scale`) truncated to [low, high], given a uniform `u`.
pub fn draw(u: f64, low: f64, high: f64, loc: f64, scale: f64) -> f64 {
    let (a, b) = ((low - loc) / scale, (high - loc) / scale);
    (ppf(u, a, b) * scale + loc).clamp(low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    // optuna.samplers._tpe._truncnorm._log_ndtr (Optuna 5.1.0)
    const OPTUNA_30: f64 = -454.32124395634315;
    const OPTUNA_19_9: f64 = -201.9171677073326;
    const OPTUNA_20_1: f64 = -205.92711840194823;

    #[test]
    fn log_ndtr_matches_known_values() {
        // Phi(0) = 0.5, Phi(-1.959964) = 0.025; the tails as Optuna's `_log_ndtr` gives them
        assert!((log_ndtr(0.0) - 0.5f64.ln()).abs() < 1e-12);
        assert!((log_ndtr(-1.959963984540054) - 0.025f64.ln()).abs() < 1e-9);
        for (x, optuna) in [
            (-30.0, OPTUNA_30),
            (-19.9, OPTUNA_19_9),
            (-20.1, OPTUNA_20_1),
        ] {
            assert!(
                (log_ndtr(x) - optuna).abs() < 1e-6 * optuna.abs(),
                "{x}: {}",
                log_ndtr(x)
            );
        }
        assert!(log_ndtr(10.0) < 0.0 && log_ndtr(10.0) > -1e-20);
    }

    #[test]
    fn the_density_integrates_to_one_and_the_quantiles_invert_the_cdf() {
        let (a, b, loc, scale) = (-0.3, 2.5, 1.0, 0.7);
        let (lo, hi) = (loc + a * scale, loc + b * scale);
        let n = 20_000;
        let h = (hi - lo) / n as f64;
        let integral: f64 = (0..n)
            .map(|i| logpdf(lo + (i as f64 + 0.5) * h, a, b, loc, scale).exp() * h)
            .sum();
        assert!((integral - 1.0).abs() < 1e-6, "{integral}");
        for q in [0.01, 0.25, 0.5, 0.9, 0.999] {
            let z = ppf(q, a, b);
            let cdf = (log_gauss_mass(a, z) - log_gauss_mass(a, b)).exp();
            assert!((cdf - q).abs() < 1e-9, "q {q}: cdf {cdf}");
        }
        // a right-side interval, mirrored
        let z = ppf(0.5, 3.0, 40.0);
        assert!(z > 3.0 && z < 3.5, "{z}");
    }
}
