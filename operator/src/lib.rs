//! minilab's Kubernetes side: the ImageJob custom resource and the operator that
//! derives its status from the buckets.
//!
//! A reconcile (in [`controller`]) observes the buckets, takes the pure step of
//! [`status`] (with [`upload`] and [`batch`] jobs in their own modules), enqueues
//! batch work and writes the status. [`run`] reconciles while this replica holds
//! the Lease ([`leader`]).

pub mod aws_resources;
pub mod batch;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod status;
pub mod tracker;
pub mod upload;

pub use crd::{ImageJob, ImageJobSpec, ImageJobStatus, Phase};
pub use leader::run;
