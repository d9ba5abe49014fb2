//! Reprocessing: a finished upload run again under an ImageJob's recipe (its
//! `spec.reprocess`), as the upload's next revision. The new outputs get new keys
//! (`{output}.r{revision}.{ext}`), so every address ever served keeps its bytes;
//! the manifest names the new outputs and keeps the earlier ones' records. A
//! reprocessing that fails leaves the upload as it was, noting the failure. The
//! manifest is replaced only if nothing else replaced it meanwhile (a DELETE's
//! tombstone, another reprocessing): a conditional PUT on the ETag it was read at.

use crate::{Outcome, SkipReason, Task, Transient, Worker};
use minilab_core::event::WorkItem;
use minilab_core::manifest::{ManifestState, Reprocessed, Revision};
use minilab_core::{Manifest, keys};
use std::time::Instant;

impl Worker {
    /// Reprocesses the upload `item` names for the ImageJob whose uid is `job`,
    /// unless that job did already (a second delivery), the upload has not finished
    /// its first processing, or it was deleted.
    pub(crate) async fn reprocess(&self, item: &WorkItem, job: &str) -> Result<Outcome, Transient> {
        let Some(id) = keys::parse_source_key(&item.key).filter(|_| {
            item.bucket == self.uploads_bucket && item.destination_bucket == self.processed_bucket
        }) else {
            tracing::warn!(
                job = item.job,
                key = item.key,
                "ignoring a reprocessing of something not an upload here"
            );
            return Ok(Outcome::Skipped(SkipReason::ForeignObject));
        };
        let mut task = Task {
            id: Some(id),
            bucket: self.uploads_bucket.clone(),
            key: keys::source_key(id),
            recipe: Some(item.recipe.clone()),
            prefix: keys::upload_prefix(id),
            revision: 0,
        };
        let read = minilab_service::objects::read_manifest_tagged(
            &self.s3,
            &self.processed_bucket,
            &task.manifest_key(),
        )
        .await
        .map_err(|e| Transient(format!("reading the manifest: {e}")))?;
        let Some((current, etag)) = read else {
            return Ok(Outcome::Skipped(SkipReason::NotFinished));
        };
        if current.state == ManifestState::Deleted {
            return Ok(Outcome::Skipped(SkipReason::SourceGone));
        }
        if current.reprocessed.as_ref().is_some_and(|r| r.job == job) {
            return Ok(Outcome::Skipped(SkipReason::Duplicate));
        }
        task.revision = current.revision + 1;

        let started = Instant::now();
        self.metrics.in_flight.inc();
        let made = self.make(&task).await;
        self.metrics.in_flight.dec();
        let Some(made) = made? else {
            return Ok(Outcome::Skipped(SkipReason::SourceGone));
        };
        let written = revised(current, job, made.manifest.clone());
        if !self
            .write_manifest(&task, &written, etag.as_deref())
            .await?
        {
            // Replaced meanwhile: the new outputs are nobody's; the next delivery
            // reads what replaced it. (Any other failure keeps them: the write may
            // have landed, and then the manifest names them.)
            self.forget_outputs(&made.manifest).await;
            return Err(Transient(
                "the manifest was replaced while reprocessing".into(),
            ));
        }
        self.announce(&task);
        Ok(self.report(&task, None, &made.manifest, started))
    }

    /// Deletes the outputs a reprocessing stored for a manifest never written; best
    /// effort (an object left over is served by no address anyone was told).
    async fn forget_outputs(&self, made: &Manifest) {
        for output in &made.outputs {
            if let Err(err) = self
                .s3
                .delete_object()
                .bucket(&self.processed_bucket)
                .key(&output.key)
                .send()
                .await
            {
                tracing::warn!(key = output.key, error = %crate::describe(&err), "could not delete an unused output");
            }
        }
    }
}

/// The manifest a reprocessing by `job` leaves, from the `current` one and the one
/// it `made`: on success the made one, the current outputs kept as the newest
/// earlier revision; on failure the current one, noting why.
pub(crate) fn revised(current: Manifest, job: &str, made: Manifest) -> Manifest {
    let reprocessed = Some(Reprocessed {
        job: job.to_owned(),
        recipe: made.recipe.clone(),
        error: made.error.clone(),
    });
    if made.error.is_some() {
        return Manifest {
            reprocessed,
            ..current
        };
    }
    let mut earlier = vec![Revision {
        revision: current.revision,
        recipe: current.recipe,
        outputs: current.outputs,
    }];
    earlier.extend(current.earlier);
    Manifest {
        reprocessed,
        earlier,
        ..made
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(recipe: &str, revision: u32, outputs: &[&str], failed: bool) -> Manifest {
        let outputs: Vec<_> = outputs
            .iter()
            .map(|key| {
                json!({"name": key.split('.').next(), "key": key, "width": 1, "height": 1,
                    "bytes": 1, "contentType": "image/jpeg"})
            })
            .collect();
        serde_json::from_value(json!({
            "version": Manifest::VERSION,
            "state": if failed { "failed" } else { "succeeded" },
            "recipe": recipe,
            "source": {"bucket": "up", "key": "uploads/x", "bytes": 1, "deleteKey": "k"},
            "outputs": outputs,
            "error": failed.then(|| json!({"code": "corrupt-image", "message": "no"})),
            "timings": {"downloadMs": 0.0, "decodeMs": 0.0, "transformMs": 0.0,
                "encodeMs": 0.0, "uploadMs": 0.0},
            "finishedAt": "2026-12-07T00:00:00Z",
            "revision": revision,
        }))
        .unwrap()
    }

    #[test]
    fn a_reprocessing_is_the_next_revision_and_keeps_the_earlier_outputs_named() {
        let first = manifest("web", 0, &["large.jpg"], false);
        let second = revised(
            first.clone(),
            "job-a",
            manifest("thumbnail", 1, &["square.r1.jpg"], false),
        );
        assert_eq!((second.revision, second.recipe.as_str()), (1, "thumbnail"));
        assert_eq!(second.outputs[0].key, "square.r1.jpg");
        assert_eq!(second.outputs_of(0), Some(first.outputs.as_slice()));
        let reprocessed = second.reprocessed.clone().unwrap();
        assert_eq!(
            (reprocessed.job.as_str(), reprocessed.error),
            ("job-a", None)
        );

        let third = revised(
            second.clone(),
            "job-b",
            manifest("web", 2, &["large.r2.jpg"], false),
        );
        let kept: Vec<(u32, &str)> = third
            .earlier
            .iter()
            .map(|r| (r.revision, r.recipe.as_str()))
            .collect();
        assert_eq!(kept, [(1, "thumbnail"), (0, "web")], "newest first");
        assert_eq!(third.outputs_of(1), Some(second.outputs.as_slice()));
        assert_eq!(third.outputs_of(3), None);
    }

    #[test]
    fn a_failed_reprocessing_leaves_the_upload_as_it_was_and_says_why() {
        let current = manifest("web", 1, &["large.r1.jpg"], false);
        let after = revised(current.clone(), "job-c", manifest("sepia", 2, &[], true));
        let reprocessed = after.reprocessed.clone().unwrap();
        assert_eq!(reprocessed.recipe, "sepia");
        assert_eq!(
            reprocessed.error.map(|e| e.code.as_str()),
            Some("corrupt-image")
        );
        assert_eq!(
            Manifest {
                reprocessed: None,
                ..after
            },
            current
        );
    }
}
