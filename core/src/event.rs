//! S3 event notifications, as S3 sends them to SQS and as `minilab up`'s embedded
//! store emits them. Keys arrive URL-encoded with `+` for a space.

use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};

/// One object that was created, with its key decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectCreated {
    pub bucket: String,
    pub key: String,
    pub size: Option<u64>,
    pub event_time: Option<DateTime<Utc>>,
    /// What tells this write of the key from any other write of it, the same in
    /// every delivery of its event: S3's `sequencer` with the writing request's id
    /// (`x-amz-request-id`; LocalStack sends one constant sequencer), else the
    /// `eTag`. `None` when the event carries none of them.
    pub write: Option<String>,
}

/// What a queue message turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// S3's `s3:TestEvent`, sent when notifications are configured: skip it.
    Test,
    /// Objects created (other event types in the same message are dropped).
    Created(Vec<ObjectCreated>),
    /// One image of a batch ImageJob, enqueued by the operator.
    Work(WorkItem),
}

/// One image of a batch job: the operator puts these on the same queue as the S3
/// events, as `{"minilabWorkItem": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkItem {
    /// `namespace/name` of the ImageJob, for logs.
    pub job: String,
    pub bucket: String,
    pub key: String,
    pub recipe: String,
    pub destination_bucket: String,
    /// Outputs go to `{destinationPrefix}{output}.{ext}`, the manifest to
    /// `{destinationPrefix}manifest.json`.
    pub destination_prefix: String,
    /// For an ImageJob with `spec.reprocess`: its uid. `key` is then an upload's
    /// source, processed again as the upload's next revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprocess: Option<String>,
}

impl WorkItem {
    pub fn body(&self) -> String {
        serde_json::json!({ "minilabWorkItem": self }).to_string()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not an S3 event notification: {0}")]
pub struct NotAnEvent(String);

/// Parses a message body. An error means the body is not an S3 event at all.
pub fn parse_message(body: &str) -> Result<Message, NotAnEvent> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(rename = "Records")]
        records: Option<Vec<Record>>,
        #[serde(rename = "Event")]
        event: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Work {
        minilab_work_item: WorkItem,
    }
    if body.contains("\"minilabWorkItem\"") {
        let work: Work = serde_json::from_str(body).map_err(|e| NotAnEvent(e.to_string()))?;
        return Ok(Message::Work(work.minilab_work_item));
    }
    let envelope: Envelope = serde_json::from_str(body).map_err(|e| NotAnEvent(e.to_string()))?;
    if envelope.event.as_deref() == Some("s3:TestEvent") {
        return Ok(Message::Test);
    }
    let records = envelope
        .records
        .ok_or_else(|| NotAnEvent("no Records".into()))?;
    let mut created = Vec::with_capacity(records.len());
    for record in records {
        if !record.event_name.starts_with("ObjectCreated:") {
            continue;
        }
        let key = decode_key(&record.s3.object.key)
            .ok_or_else(|| NotAnEvent("key is not valid UTF-8".into()))?;
        let write = write_of(&record);
        created.push(ObjectCreated {
            bucket: record.s3.bucket.name,
            key,
            size: record.s3.object.size,
            event_time: record.event_time,
            write,
        });
    }
    Ok(Message::Created(created))
}

/// [`ObjectCreated::write`] of one record.
fn write_of(record: &Record) -> Option<String> {
    let object = &record.s3.object;
    let request = record
        .response_elements
        .as_ref()
        .and_then(|r| r.request_id.as_ref());
    let parts: Vec<&str> = [object.sequencer.as_ref(), request]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .filter(|part| !part.is_empty())
        .collect();
    if parts.is_empty() {
        return object.e_tag.clone().filter(|e| !e.is_empty());
    }
    Some(parts.join("/"))
}

/// Decodes a key as S3 encodes it in events: `+` is a space, then percent-decoding.
pub fn decode_key(encoded: &str) -> Option<String> {
    let plus_as_space = encoded.replace('+', " ");
    percent_decode_str(&plus_as_space)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/')
    .remove(b' ');

/// Encodes a key as S3 does in events (the inverse of [`decode_key`]).
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY_ENCODE)
        .to_string()
        .replace(' ', "+")
}

/// The notification body S3 sends for one created object; its `sequencer` is the
/// time of the write in nanoseconds, in hex (S3's grows with each write of a key).
pub fn object_created_body(
    event_name: &str,
    bucket: &str,
    key: &str,
    size: Option<u64>,
    at: DateTime<Utc>,
) -> String {
    let record = Record {
        event_version: "2.1".into(),
        event_source: "aws:s3".into(),
        aws_region: "us-east-1".into(),
        event_time: Some(at),
        event_name: format!("ObjectCreated:{event_name}"),
        response_elements: None,
        s3: S3Entity {
            s3_schema_version: "1.0".into(),
            bucket: BucketEntity {
                name: bucket.into(),
                arn: format!("arn:aws:s3:::{bucket}"),
            },
            object: ObjectEntity {
                key: encode_key(key),
                size,
                e_tag: None,
                sequencer: at.timestamp_nanos_opt().map(|n| format!("{n:016X}")),
            },
        },
    };
    serde_json::json!({ "Records": [record] }).to_string()
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    #[serde(default)]
    event_version: String,
    #[serde(default)]
    event_source: String,
    #[serde(default)]
    aws_region: String,
    #[serde(default)]
    event_time: Option<DateTime<Utc>>,
    event_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_elements: Option<ResponseElements>,
    s3: S3Entity,
}

#[derive(Serialize, Deserialize)]
struct ResponseElements {
    #[serde(default, rename = "x-amz-request-id")]
    request_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct S3Entity {
    #[serde(default)]
    s3_schema_version: String,
    bucket: BucketEntity,
    object: ObjectEntity,
}

#[derive(Serialize, Deserialize)]
struct BucketEntity {
    name: String,
    #[serde(default)]
    arn: String,
}

#[derive(Serialize, Deserialize)]
struct ObjectEntity {
    key: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "eTag", skip_serializing_if = "Option::is_none")]
    e_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequencer: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_aws_sends() {
        let body = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"eu-west-1",
            "eventTime":"2026-11-25T08:00:00.000Z","eventName":"ObjectCreated:Post",
            "userIdentity":{"principalId":"AWS:X"},"requestParameters":{"sourceIPAddress":"1.2.3.4"},
            "responseElements":{"x-amz-request-id":"R"},
            "s3":{"s3SchemaVersion":"1.0","configurationId":"c","bucket":{"name":"up","ownerIdentity":{"principalId":"X"},"arn":"arn:aws:s3:::up"},
            "object":{"key":"uploads/my+photo%C3%A9%2B1.jpg","size":1024,"eTag":"e","sequencer":"0"}}}]}"#;
        let Message::Created(objects) = parse_message(body).unwrap() else {
            panic!("not created")
        };
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].bucket, "up");
        assert_eq!(objects[0].key, "uploads/my photoé+1.jpg");
        assert_eq!(objects[0].size, Some(1024));
        assert_eq!(objects[0].write.as_deref(), Some("0/R"));
    }

    #[test]
    fn writes_are_told_apart_by_request_when_the_sequencer_is_constant() {
        // LocalStack's events: one sequencer for every write, the same eTag for the
        // same bytes; the request id differs.
        let body = |request: &str| {
            format!(
                r#"{{"Records":[{{"eventName":"ObjectCreated:Post","responseElements":{{"x-amz-request-id":"{request}"}},
                "s3":{{"bucket":{{"name":"up"}},"object":{{"key":"k","eTag":"e","sequencer":"0055AED6DCD90281E5"}}}}}}]}}"#
            )
        };
        let write = |request: &str| match parse_message(&body(request)).unwrap() {
            Message::Created(objects) => objects[0].write.clone(),
            _ => panic!("not created"),
        };
        assert_ne!(write("A"), write("B"));
        assert_eq!(write("A"), write("A"));
    }

    #[test]
    fn recognises_the_test_event_and_rejects_other_bodies() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-25T08:00:00.000Z","Bucket":"up"}"#;
        assert_eq!(parse_message(test).unwrap(), Message::Test);
        assert!(parse_message("hello").is_err());
        assert!(parse_message(r#"{"foo":1}"#).is_err());
    }

    #[test]
    fn emitted_bodies_round_trip_odd_keys() {
        let key = "uploads/a b+c%d/é?.jpg";
        let body = object_created_body("Put", "b", key, Some(3), Utc::now());
        let Message::Created(objects) = parse_message(&body).unwrap() else {
            panic!("not created")
        };
        assert_eq!(objects[0].key, key);
        // Two writes of one key are told apart.
        let later = object_created_body(
            "Put",
            "b",
            key,
            Some(3),
            Utc::now() + chrono::Duration::seconds(1),
        );
        let Message::Created(later) = parse_message(&later).unwrap() else {
            panic!("not created")
        };
        assert!(objects[0].write.is_some());
        assert_ne!(objects[0].write, later[0].write);
    }
}
