//! What minilab's API, worker and operator share beyond the domain (`minilab-core`):
//! the few S3 reads all of them make ([`objects`]), the `/metrics` answer
//! ([`metrics`]), and word of an upload's progress from the worker ([`changes`]) as
//! the API and the operator take it ([`peer_words`]), and the count of every S3
//! request each sends ([`s3_requests`]).

pub mod changes;
pub mod metrics;
pub mod objects;
pub mod peer_words;
pub mod s3_requests;
