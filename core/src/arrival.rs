//! Whether an upload that has no manifest yet is still coming: the one rule the API
//! (`awaiting_upload` / `expired`) and the operator (AwaitingUpload / Expired) share.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// How long after its presigned POST lapses an upload that has not arrived is given
/// up: an upload that started just before the deadline may still complete.
pub const ARRIVAL_GRACE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The source object is stored: the image is being processed.
    Arrived,
    /// Not yet, and it may still come.
    Awaiting,
    /// It never came: the URL lapsed more than [`ARRIVAL_GRACE`] ago.
    Expired,
}

/// When an upload whose URL lapses at `expires_at` is given up.
pub fn given_up_at(expires_at: DateTime<Utc>) -> DateTime<Utc> {
    chrono::Duration::from_std(ARRIVAL_GRACE)
        .ok()
        .and_then(|grace| expires_at.checked_add_signed(grace))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The arrival of an upload without a manifest: `stored` says whether its source
/// object exists, `expires_at` when its presigned POST lapses.
pub fn arrival(stored: bool, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Arrival {
    if stored {
        Arrival::Arrived
    } else if now > given_up_at(expires_at) {
        Arrival::Expired
    } else {
        Arrival::Awaiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_is_given_up_only_after_its_url_and_the_grace() {
        let expires = Utc::now();
        let at = |s: i64| expires + chrono::Duration::seconds(s);
        assert_eq!(arrival(false, expires, at(-10)), Arrival::Awaiting);
        assert_eq!(arrival(false, expires, at(59)), Arrival::Awaiting);
        assert_eq!(arrival(false, expires, at(61)), Arrival::Expired);
        assert_eq!(arrival(true, expires, at(61)), Arrival::Arrived);
        assert_eq!(
            given_up_at(DateTime::<Utc>::MAX_UTC),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
