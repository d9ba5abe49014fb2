//! Object keys. The browser never chooses one: every key is derived from an
//! [`UploadId`], so a redelivered event writes to the same keys again.

use crate::UploadId;

const UPLOAD_PREFIX: &str = "uploads/";

/// Where the browser's POST puts the original image, in the uploads bucket.
pub fn source_key(id: UploadId) -> String {
    format!("{UPLOAD_PREFIX}{id}")
}

/// The upload id of a source key, or `None` for a key minilab did not issue.
pub fn parse_source_key(key: &str) -> Option<UploadId> {
    key.strip_prefix(UPLOAD_PREFIX)?.parse().ok()
}

/// Where the worker writes one output, in the processed bucket.
pub fn output_key(id: UploadId, output: &str, extension: &str) -> String {
    format!("{id}/{output}.{extension}")
}

/// Where the worker writes the manifest, last, in the processed bucket.
pub fn manifest_key(id: UploadId) -> String {
    format!("{id}/manifest.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn source_keys_round_trip_and_foreign_keys_do_not_parse() {
        let id = UploadId::new(Utc::now());
        assert_eq!(parse_source_key(&source_key(id)), Some(id));
        assert_eq!(parse_source_key(&format!("uploads/{id}/../x")), None);
        assert_eq!(parse_source_key(&id.to_string()), None);
        assert_eq!(parse_source_key("uploads/"), None);
    }
}
