//! The integration tests, one crate so the AWS SDK and the test servers are linked once. A module
//! per area; `support/` holds the shared parts (sample events, the in-process router, s3s-fs and
//! moto on loopback, the fault proxy, the Lambda Runtime API stand-in).

mod support;

mod binary;
mod compact;
mod compact_faults;
mod disk_full;
mod events;
mod faults;
mod hostile;
mod properties;
mod rules;
mod s3;
mod server;
mod tls;
mod tokens;
