//! Subcommand implementations; the only place that prints.
