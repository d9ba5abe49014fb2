//! Any SQS message body through the S3 event parser and key decoding; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minilab_core::event;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = std::str::from_utf8(data) {
        let _ = event::parse_message(body);
        if let Some(key) = event::decode_key(body) {
            // What S3 encodes decodes back to the same key.
            assert_eq!(event::decode_key(&event::encode_key(&key)).as_deref(), Some(key.as_str()));
        }
    }
});
