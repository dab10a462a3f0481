//! The operator's view, pure: the metrics registry and its Prometheus rendering.

pub mod metrics;
