//! The metrics a run records per epoch, by name, and which way each is better: what a
//! checkpoint's `monitor`, a sweep's metric, `--metric` and `--where` may name. The store keeps
//! them as its epochs table's columns (and re-exports these).

/// The metric names, in the order the epochs table holds them.
pub const METRICS: &[&str] = &[
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "verify_acc",
    "lr",
];

/// Whether larger is better for a metric (accuracies, lr); smaller for losses.
pub fn maximize(metric: &str) -> bool {
    !metric.ends_with("loss")
}
