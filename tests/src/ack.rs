//! The ACK controllers as the node tests play them, with LocalStack for AWS: each S3
//! `Bucket` and SQS `Queue` the chart makes is made in LocalStack from its spec (in
//! the account and region the chart names: LocalStack takes a 12-digit access key
//! as the account), and every ACK object gets what its controller writes to its
//! status (the ARN, the queue's URL, CloudFront's IDs, `ACK.ResourceSynced`). IAM,
//! CloudFront and Route 53 objects are only marked synced: the pods never call
//! them, and LocalStack's free edition has no CloudFront.
#![allow(clippy::unwrap_used)] // test harness: a panic is the failure report

use crate::kube::Cluster;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CorsConfiguration, CorsRule, CreateBucketConfiguration, Event,
    FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The kinds the chart makes through ACK (minilab.ackKinds), as `kubectl get` names them.
const KINDS: &str = "roles.iam.services.k8s.aws,buckets.s3.services.k8s.aws,\
    queues.sqs.services.k8s.aws,originaccesscontrols.cloudfront.services.k8s.aws,\
    distributions.cloudfront.services.k8s.aws,recordsets.route53.services.k8s.aws";

/// SQS attributes from a Queue's spec fields, as the SQS controller maps them.
const QUEUE_ATTRIBUTES: [(&str, &str); 7] = [
    ("visibilityTimeout", "VisibilityTimeout"),
    ("messageRetentionPeriod", "MessageRetentionPeriod"),
    (
        "receiveMessageWaitTimeSeconds",
        "ReceiveMessageWaitTimeSeconds",
    ),
    ("redrivePolicy", "RedrivePolicy"),
    ("redriveAllowPolicy", "RedriveAllowPolicy"),
    ("policy", "Policy"),
    ("sqsManagedSSEEnabled", "SqsManagedSseEnabled"),
];

pub struct Controllers {
    account: String,
    region: String,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    /// (kind, name) → the generation last made in AWS.
    made: HashMap<(String, String), i64>,
}

impl Controllers {
    /// Clients for LocalStack at `endpoint` as `account` in `region`.
    pub async fn new(endpoint: &str, account: &str, region: &str) -> Controllers {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .region(aws_config::Region::new(region.to_owned()))
            .endpoint_url(endpoint)
            .credentials_provider(aws_credential_types::Credentials::new(
                account, "test", None, None, "test",
            ))
            .load()
            .await;
        Controllers {
            account: account.to_owned(),
            region: region.to_owned(),
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(true)
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            made: HashMap::new(),
        }
    }

    /// One pass over the namespace's ACK objects: each new or changed one is made
    /// in LocalStack and reported synced. A bucket whose queue is not made yet waits
    /// for a later pass, as the S3 controller retries.
    pub async fn reconcile(&mut self, cluster: &Cluster) {
        let listed: Value =
            serde_json::from_str(&cluster.kubectl(&["get", KINDS, "-o", "json"])).unwrap();
        for object in listed["items"].as_array().into_iter().flatten() {
            let kind = object["kind"].as_str().unwrap_or_default().to_owned();
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
            if self.made.get(&(kind.clone(), name.clone())) == Some(&generation) {
                continue;
            }
            let spec = &object["spec"];
            let status = match kind.as_str() {
                "Bucket" => self.bucket(spec).await,
                "Queue" => self.queue(spec).await,
                "OriginAccessControl" => Some(json!({"id": "E2QWRUHEXAMPLE"})),
                "Distribution" => Some(json!({"domainName": "d111111abcdef8.cloudfront.net"})),
                _ => Some(json!({})),
            };
            let Some(mut status) = status else { continue };
            status["conditions"] = json!([{"type": "ACK.ResourceSynced", "status": "True"}]);
            let patch = json!({"status": status}).to_string();
            let kind_name = format!("{}/{name}", kind.to_lowercase());
            cluster.kubectl(&[
                "patch",
                &format!("{}.{}", kind.to_lowercase(), group(object)),
                &name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ]);
            eprintln!("ACK (played): {kind_name} synced");
            self.made.insert((kind, name), generation);
        }
    }

    /// The bucket, its CORS rules and its notification; None while its queue is
    /// not made yet.
    async fn bucket(&self, spec: &Value) -> Option<Value> {
        let name = spec["name"].as_str().unwrap();
        let created = self
            .s3
            .create_bucket()
            .bucket(name)
            .create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            )
            .send()
            .await;
        if let Err(e) = created {
            let code = e.as_service_error().and_then(|e| e.meta().code());
            assert_eq!(
                code,
                Some("BucketAlreadyOwnedByYou"),
                "create bucket {name}: {e:?}"
            );
        }
        if let Some(rules) = spec["cors"]["corsRules"].as_array() {
            let rules = rules.iter().map(|rule| {
                let strings = |field: &str| -> Vec<String> {
                    rule[field]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                };
                CorsRule::builder()
                    .set_allowed_origins(Some(strings("allowedOrigins")))
                    .set_allowed_methods(Some(strings("allowedMethods")))
                    .set_allowed_headers(Some(strings("allowedHeaders")))
                    .set_expose_headers(Some(strings("exposeHeaders")))
                    .set_max_age_seconds(rule["maxAgeSeconds"].as_i64().map(|s| s as i32))
                    .build()
                    .unwrap()
            });
            self.s3
                .put_bucket_cors()
                .bucket(name)
                .cors_configuration(
                    CorsConfiguration::builder()
                        .set_cors_rules(Some(rules.collect()))
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .expect("put CORS");
        }
        let queues = spec["notification"]["queueConfigurations"].as_array();
        let mut notification = NotificationConfiguration::builder();
        for queue in queues.into_iter().flatten() {
            let arn = queue["queueARN"].as_str().unwrap();
            let queue_name = arn.rsplit(':').next().unwrap();
            if self
                .sqs
                .get_queue_url()
                .queue_name(queue_name)
                .queue_owner_aws_account_id(&self.account)
                .send()
                .await
                .is_err()
            {
                return None;
            }
            let rules = queue["filter"]["key"]["filterRules"].as_array();
            let rules = rules.into_iter().flatten().map(|rule| {
                FilterRule::builder()
                    .name(FilterRuleName::from(rule["name"].as_str().unwrap()))
                    .value(rule["value"].as_str().unwrap())
                    .build()
            });
            notification = notification.queue_configurations(
                QueueConfiguration::builder()
                    .queue_arn(arn)
                    .set_events(Some(
                        queue["events"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|e| Event::from(e.as_str().unwrap()))
                            .collect(),
                    ))
                    .filter(
                        NotificationConfigurationFilter::builder()
                            .key(
                                S3KeyFilter::builder()
                                    .set_filter_rules(Some(rules.collect()))
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
                    .unwrap(),
            );
        }
        if queues.is_some() {
            self.s3
                .put_bucket_notification_configuration()
                .bucket(name)
                .notification_configuration(notification.build())
                .send()
                .await
                .expect("put notification");
        }
        Some(json!({"ackResourceMetadata": self.metadata(&format!("arn:aws:s3:::{name}"))}))
    }

    /// The queue with the attributes its spec names (set again when the spec changes).
    async fn queue(&self, spec: &Value) -> Option<Value> {
        let name = spec["queueName"].as_str().unwrap();
        let attributes: HashMap<QueueAttributeName, String> = QUEUE_ATTRIBUTES
            .iter()
            .filter_map(|(field, attribute)| {
                let value = spec[field].as_str()?;
                Some((QueueAttributeName::from(*attribute), value.to_owned()))
            })
            .collect();
        let url = match self.sqs.get_queue_url().queue_name(name).send().await {
            Ok(found) => {
                let url = found.queue_url.unwrap();
                self.sqs
                    .set_queue_attributes()
                    .queue_url(&url)
                    .set_attributes(Some(attributes))
                    .send()
                    .await
                    .expect("set queue attributes");
                url
            }
            Err(_) => crate::aws::create_queue(&self.sqs, name, attributes).await,
        };
        let arn = format!("arn:aws:sqs:{}:{}:{name}", self.region, self.account);
        Some(json!({"ackResourceMetadata": self.metadata(&arn), "queueURL": url}))
    }

    /// Whether the bucket holds the key.
    pub async fn has_object(&self, bucket: &str, key: &str) -> bool {
        self.s3
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .is_ok()
    }

    fn metadata(&self, arn: &str) -> Value {
        json!({"arn": arn, "ownerAccountID": self.account, "region": self.region})
    }
}

/// An object's API group, from its apiVersion.
fn group(object: &Value) -> &str {
    object["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/'))
        .map(|(group, _)| group)
        .unwrap_or_default()
}
