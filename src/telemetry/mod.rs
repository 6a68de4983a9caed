//! What mailhook tells an operator: its log lines (`logging.rs`) and its metrics (`metrics.rs`,
//! EMF lines under Lambda, Prometheus text locally).

pub mod logging;
pub mod metrics;
