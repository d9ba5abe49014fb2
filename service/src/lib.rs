//! What minilab's API, worker and operator share beyond the domain (`minilab-core`):
//! the few S3 reads all of them make ([`objects`]) and the `/metrics` answer
//! ([`metrics`]).

pub mod metrics;
pub mod objects;
