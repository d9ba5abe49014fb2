//! LocalStack fixtures: fresh buckets, queues and notifications per test, and the
//! real `minilab api` and `minilab worker` processes pointed at them.
//!
//! `./tests/run` starts LocalStack and exports `MINILAB_LOCALSTACK_URL`.

use crate::{Api, Process, minilab_bin};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CorsConfiguration, CorsRule, CreateBucketConfiguration, Event,
    NotificationConfiguration, QueueConfiguration,
};
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

pub const REGION: &str = "us-east-1";
/// The one origin the uploads bucket's CORS rule allows.
pub const PAGE_ORIGIN: &str = "http://page.minilab.test";

/// LocalStack's URL, from `MINILAB_LOCALSTACK_URL`.
pub fn localstack_url() -> String {
    std::env::var("MINILAB_LOCALSTACK_URL")
        .expect("MINILAB_LOCALSTACK_URL is not set: run these tests through ./tests/run, which starts LocalStack")
}

/// Clients for LocalStack, with the standard test credentials.
pub struct Stack {
    pub endpoint: String,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
}

/// One test's resources: buckets, a queue with a dead-letter queue, notifications.
pub struct Env {
    pub uploads: String,
    pub processed: String,
    pub queue_url: String,
    pub dlq_url: String,
}

pub struct EnvOptions {
    /// The queue's visibility timeout, in seconds.
    pub visibility_timeout: u32,
    /// Receives before SQS moves a message to the dead-letter queue.
    pub max_receive_count: u32,
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            visibility_timeout: 30,
            max_receive_count: 5,
        }
    }
}

impl Stack {
    pub async fn connect() -> Stack {
        let endpoint = localstack_url();
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            // LocalStack is on loopback: plain HTTP.
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_credential_types::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        Stack {
            endpoint,
            s3,
            sqs: aws_sdk_sqs::Client::new(&sdk),
        }
    }

    /// Creates fresh, uniquely named resources wired as on AWS.
    pub async fn env(&self, options: EnvOptions) -> Env {
        let suffix = minilab_core::UploadId::new(chrono::Utc::now()).to_string();
        let env = Env {
            uploads: format!("up-{suffix}"),
            processed: format!("out-{suffix}"),
            queue_url: String::new(),
            dlq_url: String::new(),
        };
        for bucket in [&env.uploads, &env.processed] {
            self.create_bucket(bucket).await;
        }
        let rule = CorsRule::builder()
            .allowed_origins(PAGE_ORIGIN)
            .allowed_methods("POST")
            .allowed_methods("GET")
            .allowed_headers("*")
            .max_age_seconds(600)
            .build()
            .expect("cors rule");
        self.s3
            .put_bucket_cors()
            .bucket(&env.uploads)
            .cors_configuration(
                CorsConfiguration::builder()
                    .cors_rules(rule)
                    .build()
                    .expect("cors"),
            )
            .send()
            .await
            .expect("put CORS");

        let dlq_url = self
            .create_queue(&format!("dlq-{suffix}"), HashMap::new())
            .await;
        let dlq_arn = self.queue_arn(&dlq_url).await;
        let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": options.max_receive_count });
        let queue_url = self
            .create_queue(
                &format!("events-{suffix}"),
                HashMap::from([
                    (
                        QueueAttributeName::VisibilityTimeout,
                        options.visibility_timeout.to_string(),
                    ),
                    (QueueAttributeName::RedrivePolicy, redrive.to_string()),
                ]),
            )
            .await;
        let queue_arn = self.queue_arn(&queue_url).await;
        let notification = NotificationConfiguration::builder()
            .queue_configurations(
                QueueConfiguration::builder()
                    .queue_arn(queue_arn)
                    .events(Event::from("s3:ObjectCreated:*"))
                    .build()
                    .expect("queue configuration"),
            )
            .build();
        self.s3
            .put_bucket_notification_configuration()
            .bucket(&env.uploads)
            .notification_configuration(notification)
            .send()
            .await
            .expect("put notification");
        Env {
            queue_url,
            dlq_url,
            ..env
        }
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let mut request = self.s3.create_bucket().bucket(bucket);
        if REGION != "us-east-1" {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(REGION))
                    .build(),
            );
        }
        request.send().await.expect("create bucket");
    }

    async fn create_queue(
        &self,
        name: &str,
        attributes: HashMap<QueueAttributeName, String>,
    ) -> String {
        create_queue(&self.sqs, name, attributes).await
    }

    async fn queue_arn(&self, url: &str) -> String {
        self.sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("queue arn")
    }

    /// Visible plus in-flight messages of a queue.
    pub async fn queue_depth(&self, url: &str) -> u64 {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap_or_default();
        attributes
            .values()
            .map(|v| v.parse::<u64>().unwrap_or(0))
            .sum()
    }

    /// Sends `body` to the queue at `url` (an event taken off it, delivered again).
    pub async fn send_message(&self, url: &str, body: &str) {
        self.sqs
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }

    /// Receives (long-polling, bounded by `limit`) until a message whose body
    /// contains `needle` arrives; returns its body and deletes it.
    pub async fn take_message(&self, url: &str, needle: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let received = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive");
            for message in received.messages() {
                let body = message.body().unwrap_or_default();
                if body.contains(needle) {
                    self.sqs
                        .delete_message()
                        .queue_url(url)
                        .receipt_handle(message.receipt_handle().unwrap_or_default())
                        .send()
                        .await
                        .expect("delete");
                    return Some(body.to_owned());
                }
            }
        }
        None
    }

    /// Keys under `prefix` in `bucket`, sorted.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let listed = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("list");
        let mut keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        keys.sort();
        keys
    }

    /// How many manifests the processed bucket holds.
    pub async fn manifest_count(&self, bucket: &str) -> usize {
        let mut count = 0;
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            count += page
                .expect("list")
                .contents()
                .iter()
                .filter(|o| o.key().is_some_and(|k| k.ends_with("/manifest.json")))
                .count();
        }
        count
    }

    /// Runs `minilab publish-web --bucket BUCKET ARGS...` against LocalStack, for at
    /// most 60 s; returns its exit status and output.
    pub async fn publish_web(&self, bucket: &str, args: &[&str]) -> std::process::Output {
        let child = tokio::process::Command::new(minilab_bin())
            .args(["publish-web", "--bucket", bucket, "--s3-path-style"])
            .args(args)
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_PROFILE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start minilab publish-web");
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("publish-web finishes within 60 s")
            .expect("publish-web output")
    }

    /// `minilab SUBCOMMAND` pointed at LocalStack and `env`'s buckets.
    pub fn command(&self, subcommand: &str, env: &Env) -> Command {
        let mut command = Command::new(minilab_bin());
        command
            .arg(subcommand)
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_PROFILE")
            .env("MINILAB_UPLOADS_BUCKET", &env.uploads)
            .env("MINILAB_PROCESSED_BUCKET", &env.processed)
            .env("MINILAB_S3_PATH_STYLE", "true");
        command
    }

    /// Starts `minilab api` on a free port.
    pub fn api(&self, env: &Env, extra: &[&str]) -> (Process, Api) {
        self.api_with(env, extra, &[])
    }

    /// Starts `minilab api` on a free port with extra environment variables.
    pub fn api_with(
        &self,
        env: &Env,
        extra: &[&str],
        vars: &[(&str, &std::ffi::OsStr)],
    ) -> (Process, Api) {
        let process = Process::start(
            self.command("api", env)
                .envs(vars.iter().copied())
                .args(["--listen", "127.0.0.1:0"])
                .args(extra),
            "minilab api listening on ",
        );
        let api = Api::new(process.ready_line.clone());
        (process, api)
    }

    /// Starts `minilab worker`; returns it with its metrics URL.
    pub fn worker(&self, env: &Env, extra: &[&str]) -> (Process, String) {
        let process = Process::start(
            self.command("worker", env)
                .env("MINILAB_QUEUE_URL", &env.queue_url)
                .args(["--metrics-listen", "127.0.0.1:0", "--receive-wait", "1"])
                .args(extra),
            "minilab worker consuming ",
        );
        let metrics = process
            .ready_line
            .rsplit("metrics on ")
            .next()
            .expect("metrics address")
            .to_owned();
        (process, metrics)
    }
}

/// A queue with these attributes; its URL.
pub async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> String {
    sqs.create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

/// The value of one sample in a Prometheus text exposition, 0 when absent.
pub async fn metric(http: &reqwest::Client, metrics_url: &str, sample: &str) -> f64 {
    let text = http
        .get(format!("{metrics_url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}
