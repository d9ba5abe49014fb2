//! minilab's Kubernetes side: the ImageJob custom resource and the operator that
//! derives its status from the buckets.

pub mod controller;
pub mod crd;
pub mod metrics;
pub mod observe;
pub mod tracker;

pub use crd::{ImageJob, ImageJobSpec, ImageJobStatus, Phase};
