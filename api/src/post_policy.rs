//! Presigned POST: a policy document that pins what the browser may upload, signed
//! with SigV4. The Rust SDK presigns GET and PUT only; a presigned PUT cannot bound
//! the size of the upload, a POST policy can (`content-length-range`).
//!
//! See <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html>.

use aws_credential_types::Credentials;
use aws_sigv4::sign::v4::{calculate_signature, generate_signing_key};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What one upload may be.
#[derive(Clone, Debug)]
pub struct PostPolicy<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub content_type: &'a str,
    /// The file's exact size: the policy's `content-length-range` is this size to
    /// this size, so a ticket costs what it was charged, byte for byte.
    pub size: u64,
    /// `x-amz-meta-*` fields, each pinned to its exact value.
    pub metadata: &'a [(&'a str, &'a str)],
    pub expires_at: DateTime<Utc>,
}

/// The form fields the browser sends before the file, including the signature.
pub type FormFields = BTreeMap<String, String>;

impl PostPolicy<'_> {
    /// Signs the policy with `credentials` for `region`, as of `now`.
    pub fn sign(&self, credentials: &Credentials, region: &str, now: DateTime<Utc>) -> FormFields {
        let date = now.format("%Y%m%d").to_string();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let credential = format!(
            "{}/{date}/{region}/s3/aws4_request",
            credentials.access_key_id()
        );

        let mut fields = FormFields::new();
        fields.insert("key".into(), self.key.into());
        fields.insert("Content-Type".into(), self.content_type.into());
        for (name, value) in self.metadata {
            fields.insert(format!("x-amz-meta-{name}"), (*value).into());
        }
        fields.insert("x-amz-algorithm".into(), "AWS4-HMAC-SHA256".into());
        fields.insert("x-amz-credential".into(), credential);
        fields.insert("x-amz-date".into(), amz_date);
        if let Some(token) = credentials.session_token() {
            fields.insert("x-amz-security-token".into(), token.into());
        }

        // Every field is pinned to its exact value; the bucket comes from the URL.
        let mut conditions: Vec<Value> = vec![
            json!({ "bucket": self.bucket }),
            json!(["content-length-range", self.size, self.size]),
        ];
        conditions.extend(
            fields
                .iter()
                .map(|(name, value)| json!(["eq", format!("${name}"), value])),
        );
        let document = json!({
            "expiration": self.expires_at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "conditions": conditions,
        });
        let policy = base64::engine::general_purpose::STANDARD.encode(document.to_string());

        let signing_key =
            generate_signing_key(credentials.secret_access_key(), now.into(), region, "s3");
        let signature = calculate_signature(signing_key, policy.as_bytes());
        fields.insert("policy".into(), policy);
        fields.insert("x-amz-signature".into(), signature);
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The worked example of AWS's documentation signs a policy with this key.
    #[test]
    fn signature_matches_an_independent_hmac_chain() {
        let credentials = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let now = Utc.with_ymd_and_hms(2015, 12, 29, 0, 0, 0).unwrap();
        let policy = PostPolicy {
            bucket: "sigv4examplebucket",
            key: "user/user1/photo.jpg",
            content_type: "image/jpeg",
            size: 1024,
            metadata: &[("recipe", "web")],
            expires_at: now + chrono::Duration::minutes(15),
        };
        let fields = policy.sign(&credentials, "us-east-1", now);
        assert_eq!(
            fields["x-amz-credential"],
            "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request"
        );
        assert_eq!(fields["x-amz-date"], "20151229T000000Z");
        let document: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(&fields["policy"])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(document["expiration"], "2015-12-29T00:15:00.000Z");
        let conditions = document["conditions"].as_array().unwrap();
        assert!(conditions.contains(&json!(["eq", "$key", "user/user1/photo.jpg"])));
        assert!(conditions.contains(&json!(["eq", "$x-amz-meta-recipe", "web"])));
        assert!(conditions.contains(&json!(["content-length-range", 1024, 1024])));

        // kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), "s3"), "aws4_request")
        let hmac = |key: &[u8], data: &[u8]| -> Vec<u8> {
            hex::decode(calculate_signature(key, data)).unwrap()
        };
        let k = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", b"20151229");
        let k = hmac(&k, b"us-east-1");
        let k = hmac(&k, b"s3");
        let k = hmac(&k, b"aws4_request");
        assert_eq!(
            fields["x-amz-signature"],
            calculate_signature(&k, fields["policy"].as_bytes())
        );
    }
}
