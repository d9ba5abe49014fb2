//! Sizes on demand: an output at a width its recipe allows (`widths`), made from the
//! output the first time it is asked for, stored beside it, then served like it.
//! Only allowed (output, width) pairs of a succeeded upload are made; each client's
//! renders are limited like its tickets, and at most [`RENDERS_AT_ONCE`] run at once
//! on an instance (they are CPU work in the API's process). Asked for twice at once,
//! a variant is made once: the second request waits for the first and reads it.

use crate::ApiState;
use crate::error::{ApiError, Code, Result};
use crate::limits::{ClientKey, Limiter, Rate};
use aws_sdk_s3::primitives::ByteStream;
use minilab_core::keys::OutputFile;
use minilab_core::manifest::{ManifestState, OutputRecord};
use minilab_core::recipe::OutputSpec;
use minilab_core::{Limits, Manifest, UploadId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Semaphore;

/// Renders one API instance runs at once.
pub const RENDERS_AT_ONCE: usize = 2;
/// The largest output a variant is made from.
const MAX_OUTPUT_BYTES: i64 = 64 << 20;

/// What renders share on an instance: the per-client limit, the slots, and the
/// variants being made now.
pub struct Renders {
    limiter: Limiter,
    slots: Semaphore,
    making: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Renders {
    pub fn new(rate: Rate) -> Self {
        Self {
            limiter: Limiter::new(rate),
            slots: Semaphore::new(RENDERS_AT_ONCE),
            making: Mutex::default(),
        }
    }

    /// A share in the lock of the variant at `key`, with whoever asks for it now.
    fn share(&self, key: &str) -> Share<'_> {
        let mut making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        let lock = making.entry(key.to_owned()).or_default().clone();
        Share {
            renders: self,
            key: key.to_owned(),
            lock,
        }
    }
}

/// One request's share in a variant's lock; the last share dropped (done, failed or
/// cancelled with its client) forgets the lock.
struct Share<'a> {
    renders: &'a Renders,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let mut making = self
            .renders
            .making
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: nobody else shares it.
        if Arc::strong_count(&self.lock) <= 2 {
            making.remove(&self.key);
        }
    }
}

/// A variant's bytes and ETag.
pub struct Made {
    pub bytes: Vec<u8>,
    pub etag: Option<String>,
}

/// Makes and stores the variant `file` names (its width `Some`) for `client`, or
/// says why not: `not-found` when the upload, its output or the width is not there
/// to make, `rate-limited` when the client made too many. `manifest` is the
/// upload's, when the request read it already; else it is read here.
pub async fn make(
    state: &ApiState,
    client: Option<ClientKey>,
    id: UploadId,
    file: OutputFile<'_>,
    manifest: Option<&Manifest>,
) -> Result<Made> {
    let Some(width) = file.width else {
        return Err(not_found());
    };
    let fetched;
    let manifest = match manifest {
        Some(manifest) => manifest,
        None => {
            fetched = crate::uploads::status::read_manifest(state, id)
                .await?
                .ok_or_else(not_found)?;
            &fetched
        }
    };
    let (spec, output) = allowed_spec(state, manifest, file, width)?;
    // No narrower than the output: the output itself, never enlarged, nothing made.
    if width >= output.width {
        return read(state, &output.key).await?.ok_or_else(not_found);
    }
    let key = file.key(id);
    let share = state.renders.share(&key);
    let _making = share.lock.lock().await;
    made_or_make(state, client, &spec, &output.key, width, &key).await
}

/// Whether `recipe`'s output `name` may be made at `width` on demand.
pub fn allows(state: &ApiState, recipe: &str, name: &str, width: u32) -> bool {
    allowed_output(state, recipe, name, width).is_some()
}

/// The spec of `recipe`'s output `name`, if it may be made at `width` on demand.
fn allowed_output<'a>(
    state: &'a ApiState,
    recipe: &str,
    name: &str,
    width: u32,
) -> Option<&'a OutputSpec> {
    state
        .config
        .recipes
        .get(recipe)?
        .outputs
        .iter()
        .find(|o| o.name == name)
        .filter(|spec| spec.widths.contains(&width))
}

/// Takes one make from `client`'s allowance, or answers `rate-limited`.
fn charge(state: &ApiState, client: Option<ClientKey>) -> Result<()> {
    let Some(client) = client else {
        return Ok(());
    };
    state
        .renders
        .limiter
        .check(client, Instant::now())
        .map_err(|wait| {
            state.metrics.refused(Code::RateLimited);
            let seconds = crate::limits::retry_after(wait);
            ApiError::too_many(
                Code::RateLimited,
                format!("too many images made for this client; try again in {seconds} s"),
                seconds,
            )
        })
}

/// The output's spec and record, if the upload succeeded, `file` is of its current
/// revision, and its recipe's output `file` names, in its format, allows `width`.
fn allowed_spec(
    state: &ApiState,
    manifest: &Manifest,
    file: OutputFile<'_>,
    width: u32,
) -> Result<(OutputSpec, OutputRecord)> {
    if manifest.state != ManifestState::Succeeded || manifest.revision != file.revision {
        return Err(not_found());
    }
    let spec = allowed_output(state, &manifest.recipe, file.name, width)
        .filter(|spec| spec.format == file.format)
        .ok_or_else(not_found)?;
    let made = manifest
        .outputs
        .iter()
        .find(|o| o.name == file.name)
        .ok_or_else(not_found)?;
    Ok((spec.clone(), made.clone()))
}

/// The variant at `key` if another request made it meanwhile, else made now from
/// the output (charged to `client`) and stored.
async fn made_or_make(
    state: &ApiState,
    client: Option<ClientKey>,
    spec: &OutputSpec,
    output_key: &str,
    width: u32,
    key: &str,
) -> Result<Made> {
    if let Some(made) = read(state, key).await? {
        return Ok(made);
    }
    charge(state, client)?;
    let output = read(state, output_key).await?.ok_or_else(not_found)?;
    let _slot = state
        .renders
        .slots
        .acquire()
        .await
        .map_err(ApiError::internal)?;
    let (spec_owned, bytes) = (spec.clone(), output.bytes.clone());
    let variant = tokio::task::spawn_blocking(move || {
        minilab_core::pipeline::variant(&bytes, &spec_owned, width, &Limits::default())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::internal(format!("{key}: {e}")))?;
    // No wider than asked after all (the manifest said otherwise): the output.
    let Some(variant) = variant else {
        return Ok(output);
    };
    let stored = state
        .s3
        .put_object()
        .bucket(&state.config.processed_bucket)
        .key(key)
        .content_type(spec.format.content_type())
        .cache_control(crate::images::CACHE_CONTROL)
        .body(ByteStream::from(variant.bytes.clone()))
        .send()
        .await
        .map_err(|e| ApiError::internal(format!("PutObject {key}: {e}")))?;
    Ok(Made {
        bytes: variant.bytes,
        etag: stored.e_tag().map(str::to_owned),
    })
}

/// The object at `key`, `None` when there is none.
async fn read(state: &ApiState, key: &str) -> Result<Option<Made>> {
    let object = match state
        .s3
        .get_object()
        .bucket(&state.config.processed_bucket)
        .key(key)
        .send()
        .await
    {
        Ok(object) => object,
        Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
            return Ok(None);
        }
        Err(err) => return Err(ApiError::internal(format!("GetObject {key}: {err}"))),
    };
    if object.content_length().unwrap_or(0) > MAX_OUTPUT_BYTES {
        return Err(ApiError::internal(format!(
            "{key} is larger than {MAX_OUTPUT_BYTES} bytes"
        )));
    }
    let etag = object.e_tag().map(str::to_owned);
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| ApiError::internal(format!("reading {key}: {e}")))?
        .to_vec();
    Ok(Some(Made { bytes, etag }))
}

fn not_found() -> ApiError {
    ApiError::new(Code::NotFound, "there is no such image")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variants_lock_is_forgotten_when_its_last_share_goes() {
        let renders = Renders::new(Rate {
            per_minute: 0,
            burst: 0,
        });
        let count = || renders.making.lock().unwrap().len();
        let first = renders.share("a");
        let second = renders.share("a");
        assert!(
            Arc::ptr_eq(&first.lock, &second.lock),
            "one lock per variant"
        );
        let other = renders.share("b");
        assert_eq!(count(), 2);
        drop(first);
        assert_eq!(count(), 2, "still shared");
        drop(second);
        drop(other);
        assert_eq!(count(), 0, "cancelled or done, nothing left behind");
    }
}
