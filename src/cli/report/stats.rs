//! The report's statistics, computed here (not in the page) so that they are tested against
//! reference values: seed groups (runs that differ only by `train.seed`: mean, 95% Student-t
//! interval, Welch's test against the leading group) and each swept key's main-effect share of
//! the metric's variance (eta squared; not fANOVA).

use std::collections::BTreeMap;

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Runs that differ only by seed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeedGroup {
    /// What the runs share, as `key=value` of the keys that tell groups apart.
    pub label: String,
    pub runs: Vec<i64>,
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1).
    pub sd: f64,
    /// Half the width of the 95% t-interval of the mean (None for one run).
    pub ci95: Option<f64>,
    /// Welch's two-sided p against the leading group (None for the leader, or without two
    /// runs on both sides).
    pub p_vs_leader: Option<f64>,
    pub leader: bool,
    /// The difference from the leader is not significant at 5% (Welch's p >= 0.05).
    pub within_noise: bool,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, sd)
}

/// Half the width of the 95% t-interval of the mean of `n` values with sample sd `sd`.
pub fn ci95(sd: f64, n: usize) -> Option<f64> {
    if n < 2 {
        return None;
    }
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64).ok()?;
    Some(t.inverse_cdf(0.975) * sd / (n as f64).sqrt())
}

/// Welch's two-sided t-test p-value of two samples (means, sds, sizes).
pub fn welch_p(a: (f64, f64, usize), b: (f64, f64, usize)) -> Option<f64> {
    let ((m1, s1, n1), (m2, s2, n2)) = (a, b);
    if n1 < 2 || n2 < 2 {
        return None;
    }
    let (v1, v2) = (s1 * s1 / n1 as f64, s2 * s2 / n2 as f64);
    let se = (v1 + v2).sqrt();
    if se == 0.0 {
        return Some(if m1 == m2 { 1.0 } else { 0.0 });
    }
    let t = (m1 - m2) / se;
    let df = (v1 + v2).powi(2) / (v1 * v1 / (n1 - 1) as f64 + v2 * v2 / (n2 - 1) as f64);
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    Some(2.0 * (1.0 - dist.cdf(t.abs())))
}

/// Seed groups of `runs` (id, flattened configuration, metric value), the groups of two or
/// more runs only, best mean first; `maximize` says which way is better.
pub fn seed_groups(
    runs: &[(i64, BTreeMap<String, serde_json::Value>, f64)],
    maximize: bool,
) -> Vec<SeedGroup> {
    const SEED: &str = "train.seed";
    let mut by: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, (_, flat, _)) in runs.iter().enumerate() {
        let mut k = flat.clone();
        k.remove(SEED);
        by.entry(serde_json::to_string(&k).unwrap_or_default())
            .or_default()
            .push(i);
    }
    // the keys that tell the groups apart, for their labels
    let firsts: Vec<&BTreeMap<String, serde_json::Value>> =
        by.values().map(|m| &runs[m[0]].1).collect();
    let telling: Vec<&String> = firsts
        .first()
        .map(|f| {
            f.keys()
                .filter(|k| k.as_str() != SEED)
                .filter(|k| firsts.iter().any(|o| o.get(*k) != f.get(*k)))
                .collect()
        })
        .unwrap_or_default();
    let mut groups: Vec<SeedGroup> = by
        .values()
        .filter(|m| m.len() >= 2)
        .map(|m| {
            let values: Vec<f64> = m.iter().map(|&i| runs[i].2).collect();
            let (mean, sd) = mean_sd(&values);
            let flat = &runs[m[0]].1;
            let label = telling
                .iter()
                .map(|k| {
                    let v = flat.get(*k).map(|v| v.to_string()).unwrap_or("-".into());
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>()
                .join(", ");
            SeedGroup {
                label: if label.is_empty() {
                    "all runs".into()
                } else {
                    label
                },
                runs: m.iter().map(|&i| runs[i].0).collect(),
                n: m.len(),
                mean,
                sd,
                ci95: ci95(sd, m.len()),
                p_vs_leader: None,
                leader: false,
                within_noise: false,
            }
        })
        .collect();
    groups.sort_by(|a, b| {
        let o = a.mean.total_cmp(&b.mean);
        if maximize {
            o.reverse()
        } else {
            o
        }
    });
    if let Some(first) = groups.first_mut() {
        first.leader = true;
        first.within_noise = true;
    }
    if let Some(leader) = groups.first().map(|g| (g.mean, g.sd, g.n)) {
        for g in groups.iter_mut().skip(1) {
            g.p_vs_leader = welch_p(leader, (g.mean, g.sd, g.n));
            g.within_noise = g.p_vs_leader.is_some_and(|p| p >= 0.05);
        }
    }
    groups
}

/// One swept key's main effect.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Importance {
    pub key: String,
    /// Between-group share of the metric's variance over the runs (0 to 1).
    pub eta_squared: f64,
    /// Runs it was computed over.
    pub runs: usize,
    /// The groups compared: the key's distinct values, or equal-count bins of a continuous
    /// key's values.
    pub groups: usize,
    pub binned: bool,
}

/// Eta squared of `key` over (value of the key, metric) pairs. A key with more distinct values
/// than half the runs (a continuous one) is binned into ceil(sqrt(n)) equal-count bins by
/// value first.
pub fn importance(key: &str, pairs: &[(serde_json::Value, f64)]) -> Importance {
    let n = pairs.len();
    let mut distinct: Vec<String> = pairs.iter().map(|(v, _)| v.to_string()).collect();
    distinct.sort();
    distinct.dedup();
    let binned = distinct.len() > 2 && distinct.len() * 2 > n;
    let labels: Vec<String> = if binned {
        let bins = (n as f64).sqrt().ceil().max(2.0) as usize;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (&pairs[a].0, &pairs[b].0);
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => x.to_string().cmp(&y.to_string()),
            }
        });
        let mut out = vec![String::new(); n];
        for (rank, &i) in order.iter().enumerate() {
            out[i] = (rank * bins / n).to_string();
        }
        out
    } else {
        pairs.iter().map(|(v, _)| v.to_string()).collect()
    };
    let ys: Vec<f64> = pairs.iter().map(|(_, y)| *y).collect();
    let grand = ys.iter().sum::<f64>() / n.max(1) as f64;
    let total: f64 = ys.iter().map(|y| (y - grand).powi(2)).sum();
    let mut groups: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (l, y) in labels.iter().zip(&ys) {
        groups.entry(l.as_str()).or_default().push(*y);
    }
    let between: f64 = groups
        .values()
        .map(|g| {
            let m = g.iter().sum::<f64>() / g.len() as f64;
            g.len() as f64 * (m - grand).powi(2)
        })
        .sum();
    Importance {
        key: key.to_string(),
        eta_squared: if total > 0.0 { between / total } else { 0.0 },
        runs: n,
        groups: groups.len(),
        binned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_interval_and_welch_match_scipy() {
        // scipy.stats.t.ppf(0.975, 2) = 4.302652729749462 (scipy 1.x)
        let h = ci95(1.0, 3).unwrap();
        assert!((h - 4.302652729749462 / 3f64.sqrt()).abs() < 1e-9, "{h}");
        // scipy.stats.ttest_ind([1, 2, 3], [2, 4, 6, 8], equal_var=False).pvalue
        // = 0.09991286431180087 (means 2 and 5, sds 1 and 2.581988897471611)
        let p = welch_p((2.0, 1.0, 3), (5.0, 2.581988897471611, 4)).unwrap();
        assert!((p - 0.09991286431180087).abs() < 1e-9, "{p}");
    }

    #[test]
    fn a_lead_within_the_seeds_noise_is_marked_and_a_clear_one_is_not() {
        let cfg = |lr: f64, seed: i64| {
            let mut m = BTreeMap::new();
            m.insert("optimizer.lr".to_string(), serde_json::json!(lr));
            m.insert("train.seed".to_string(), serde_json::json!(seed));
            m
        };
        let runs = vec![
            (1, cfg(0.1, 1), 0.80),
            (2, cfg(0.1, 2), 0.83),
            (3, cfg(0.1, 3), 0.78),
            (4, cfg(0.2, 1), 0.79),
            (5, cfg(0.2, 2), 0.81),
            (6, cfg(0.2, 3), 0.78),
            (7, cfg(0.5, 1), 0.40),
            (8, cfg(0.5, 2), 0.42),
            (9, cfg(0.5, 3), 0.41),
        ];
        let g = seed_groups(&runs, true);
        assert_eq!(g.len(), 3);
        assert!(g[0].leader && g[0].label == "optimizer.lr=0.1", "{g:?}");
        assert!(g[1].within_noise, "0.3 points over 3 seeds is noise: {g:?}");
        assert!(
            !g[2].within_noise && g[2].p_vs_leader.unwrap() < 0.001,
            "{g:?}"
        );
    }

    #[test]
    fn eta_squared_is_the_between_group_share() {
        // groups {1, 3} and {5, 7}: grand 4, between 2 * 1 * 4 + ... = 16, total 20
        let pairs: Vec<(serde_json::Value, f64)> = vec![
            (serde_json::json!("a"), 1.0),
            (serde_json::json!("a"), 3.0),
            (serde_json::json!("b"), 5.0),
            (serde_json::json!("b"), 7.0),
        ];
        let i = importance("k", &pairs);
        assert!((i.eta_squared - 0.8).abs() < 1e-12 && !i.binned && i.groups == 2);
        // a key constant over the runs explains nothing
        let flat: Vec<_> = pairs
            .iter()
            .map(|(_, y)| (serde_json::json!(1), *y))
            .collect();
        assert_eq!(importance("k", &flat).eta_squared, 0.0);
        // continuous values are binned
        let cont: Vec<_> = (0..9)
            .map(|i| (serde_json::json!(i as f64 * 0.1), i as f64))
            .collect();
        let c = importance("k", &cont);
        assert!(c.binned && c.groups == 3 && c.eta_squared > 0.8, "{c:?}");
    }
}
