//! `minilab api --cdn-distribution-id`: CloudFront asked to forget a deleted
//! upload's images (CreateInvalidation of `/i/{id}/*`), signed with the API's own
//! credentials (SigV4, service `cloudfront`, us-east-1: CloudFront's API is global).
//! One wildcard path per deletion; CloudFront bills paths past 1,000 a month.

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use minilab_api::cdn::CdnPurge;
use minilab_api::{Signer, TrackError};
use std::sync::Arc;
use std::time::SystemTime;

/// CloudFront's API, where `--cloudfront-endpoint` does not name another.
pub const ENDPOINT: &str = "https://cloudfront.amazonaws.com";

/// One distribution's invalidations.
pub struct CloudFront {
    endpoint: String,
    distribution: String,
    signer: Arc<Signer>,
    http: reqwest::Client,
}

impl CloudFront {
    /// `distribution` is a CloudFront id: capital letters and digits.
    pub fn new(endpoint: &str, distribution: &str, signer: Arc<Signer>) -> anyhow::Result<Self> {
        let well_formed = !distribution.is_empty()
            && distribution.len() <= 64
            && distribution
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        anyhow::ensure!(
            well_formed,
            "--cdn-distribution-id {distribution:?}: not a CloudFront distribution id"
        );
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            distribution: distribution.to_owned(),
            signer,
            http: reqwest::Client::builder()
                .timeout(minilab_api::cdn::PURGE_TIMEOUT)
                .build()?,
        })
    }
}

/// The CreateInvalidation body: one path, and a reference unique to this request.
fn invalidation_batch(pattern: &str, reference: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <InvalidationBatch xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\">\
         <Paths><Quantity>1</Quantity><Items><Path>{pattern}</Path></Items></Paths>\
         <CallerReference>{reference}</CallerReference></InvalidationBatch>"
    )
}

#[async_trait::async_trait]
impl CdnPurge for CloudFront {
    async fn purge(&self, pattern: &str) -> Result<(), TrackError> {
        let url = format!(
            "{}/2020-05-31/distribution/{}/invalidation",
            self.endpoint, self.distribution
        );
        let reference = format!(
            "minilab-{}-{}",
            chrono::Utc::now().timestamp_micros(),
            rand::random::<u32>()
        );
        let body = invalidation_batch(pattern, &reference);
        let identity = self.signer.credentials().await?.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("cloudfront")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let headers = [("content-type", "application/xml")];
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )?;
        let (signing, _) = sign(signable, &params)?.into_parts();
        let mut request = self
            .http
            .post(&url)
            .header("content-type", "application/xml")
            .body(body.clone());
        for (name, value) in signing.headers() {
            request = request.header(name, value);
        }
        let response = request.send().await?;
        let status = response.status();
        if status.as_u16() != 201 {
            let text = response.text().await.unwrap_or_default();
            return Err(format!(
                "CloudFront answered {status}: {}",
                text.chars().take(300).collect::<String>()
            )
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_distribution_id_is_capitals_and_digits() {
        let signer = || {
            let credentials =
                aws_credential_types::Credentials::new("AKID", "secret", None, None, "test");
            Arc::new(Signer::new(
                aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
            ))
        };
        assert!(CloudFront::new(ENDPOINT, "E2QWRUHAPOMQZL", signer()).is_ok());
        for bad in ["", "e2qwru", "E2/../X", "E2 Q"] {
            assert!(CloudFront::new(ENDPOINT, bad, signer()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_batch_names_the_pattern_once() {
        let body = invalidation_batch("/i/abc/*", "r1");
        assert!(body.contains("<Quantity>1</Quantity><Items><Path>/i/abc/*</Path></Items>"));
        assert!(body.contains("<CallerReference>r1</CallerReference>"));
    }
}
