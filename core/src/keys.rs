//! Object keys, written once here. The browser never chooses one: every upload key is
//! derived from an [`UploadId`], so a redelivered event writes to the same keys again.
//!
//! Results go under a *results prefix* in the processed bucket: `{id}/` for an upload,
//! `{destination}{source key relative to the source prefix}/` for one image of a batch
//! ImageJob. Under it, each output is `{output}.{ext}` and the manifest, written last,
//! is `manifest.json`.

use crate::UploadId;
use crate::recipe::{Format, is_name};

const UPLOAD_PREFIX: &str = "uploads/";
const MANIFEST: &str = "manifest.json";

/// Where the browser's POST puts the original image, in the uploads bucket.
pub fn source_key(id: UploadId) -> String {
    format!("{UPLOAD_PREFIX}{id}")
}

/// The upload id of a source key, or `None` for a key minilab did not issue.
pub fn parse_source_key(key: &str) -> Option<UploadId> {
    key.strip_prefix(UPLOAD_PREFIX)?.parse().ok()
}

/// The results prefix of an upload: `{id}/`.
pub fn upload_prefix(id: UploadId) -> String {
    format!("{id}/")
}

/// The results prefix of one image of a batch: the source key relative to the batch's
/// source prefix, under the destination prefix. `None` when `key` is not under
/// `source_prefix`.
pub fn batch_item_prefix(
    destination_prefix: &str,
    source_prefix: &str,
    key: &str,
) -> Option<String> {
    let relative = key.strip_prefix(source_prefix)?;
    Some(format!("{destination_prefix}{relative}/"))
}

/// The manifest under a results prefix.
pub fn manifest_key_in(prefix: &str) -> String {
    format!("{prefix}{MANIFEST}")
}

/// The upload's claim under its results prefix: which write of the source is the
/// one processed (the worker's, written before processing).
pub fn claim_key_in(prefix: &str) -> String {
    format!("{prefix}claim")
}

/// Whether `key` is a manifest (of any results prefix).
pub fn is_manifest_key(key: &str) -> bool {
    key.strip_suffix(MANIFEST)
        .is_some_and(|prefix| prefix.is_empty() || prefix.ends_with('/'))
}

/// Where the worker writes an upload's manifest, last, in the processed bucket.
pub fn manifest_key(id: UploadId) -> String {
    manifest_key_in(&upload_prefix(id))
}

/// Where an upload's output at `key` (an [`OutputFile`]'s key) is served at a stable
/// address, on the API or behind the CDN: `/i/{key}`, so `/i/{id}/{file}`.
pub fn image_path(key: &str) -> String {
    format!("/i/{key}")
}

/// Where every image of an upload is served under: `/i/{id}/`.
pub fn image_prefix(id: UploadId) -> String {
    image_path(&upload_prefix(id))
}

/// A file under a results prefix that is an output, of the first processing or of
/// a later revision, or such an output made at another width on demand:
/// `{name}[.r{revision}][.w{width}].{ext}` (a `.` is in no output's name, so no two
/// of them share a key). Revision 0, the first processing, has no `.r`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputFile<'a> {
    pub name: &'a str,
    /// Which processing of the image made it: 0 the first, then one more for each
    /// reprocessing ([`crate::manifest::Manifest::revision`]).
    pub revision: u32,
    /// `Some` for a width made on demand.
    pub width: Option<u32>,
    pub format: Format,
}

impl OutputFile<'_> {
    /// The file's key under a results prefix.
    pub fn key_in(&self, prefix: &str) -> String {
        let mut key = format!("{prefix}{}", self.name);
        if self.revision > 0 {
            key.push_str(&format!(".r{}", self.revision));
        }
        if let Some(width) = self.width {
            key.push_str(&format!(".w{width}"));
        }
        format!("{key}.{}", self.format.extension())
    }

    /// The file's key under `id`'s results prefix.
    pub fn key(&self, id: UploadId) -> String {
        self.key_in(&upload_prefix(id))
    }
}

/// The output file `file` names (the part of a key after the results prefix), or
/// `None` for anything else: the manifest, the claim, a malformed name.
pub fn parse_output_file(file: &str) -> Option<OutputFile<'_>> {
    let (stem, extension) = file.rsplit_once('.')?;
    let format = Format::from_extension(extension)?;
    let (name, revision, width) = parse_stem(stem)?;
    Some(OutputFile {
        name,
        revision,
        width,
        format,
    })
}

/// What `/i/{id}/{file}` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageRequest<'a> {
    /// A file as stored: `large.jpg`, `large.w640.jpg`, `large.r1.jpg`.
    File(OutputFile<'a>),
    /// `large.auto`, `large.r1.w640.auto`: the output of `name`'s size in the best
    /// format the browser accepts ([`crate::negotiate`]).
    Auto {
        name: &'a str,
        revision: u32,
        width: Option<u32>,
    },
}

/// `file` as an [`ImageRequest`], or `None` for anything that names no output.
pub fn parse_image_request(file: &str) -> Option<ImageRequest<'_>> {
    match file.strip_suffix(AUTO_EXTENSION) {
        Some(stem) => {
            let (name, revision, width) = parse_stem(stem)?;
            Some(ImageRequest::Auto {
                name,
                revision,
                width,
            })
        }
        None => parse_output_file(file).map(ImageRequest::File),
    }
}

/// The ending of an address whose format the browser's `Accept` chooses.
pub const AUTO_EXTENSION: &str = ".auto";

/// An output's name, revision and the width it is asked at, from
/// `{name}[.r{revision}][.w{width}]`: numbers without leading zeros, a revision from 1.
fn parse_stem(stem: &str) -> Option<(&str, u32, Option<u32>)> {
    fn number(digits: &str) -> Option<u32> {
        (!digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    }
    let mut parts = stem.split('.');
    let name = parts.next()?;
    let mut part = parts.next();
    let revision = match part.and_then(|p| p.strip_prefix('r')) {
        Some(digits) => {
            part = parts.next();
            number(digits)?
        }
        None => 0,
    };
    let width = match part {
        Some(p) => Some(number(p.strip_prefix('w')?)?),
        None => None,
    };
    let nothing_more = parts.next().is_none();
    (nothing_more && is_name(name) && name != "manifest").then_some((name, revision, width))
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

    #[test]
    fn results_live_under_one_prefix_per_image() {
        let id = UploadId::new(Utc::now());
        assert_eq!(manifest_key(id), format!("{id}/manifest.json"));
        let large = OutputFile {
            name: "large",
            revision: 0,
            width: None,
            format: Format::Jpeg,
        };
        assert_eq!(large.key(id), format!("{id}/large.jpg"));
        let item = batch_item_prefix("out/", "shoot/", "shoot/a/b.jpg").unwrap();
        assert_eq!(item, "out/a/b.jpg/");
        assert_eq!(manifest_key_in(&item), "out/a/b.jpg/manifest.json");
        assert_eq!(batch_item_prefix("out/", "shoot/", "other/b.jpg"), None);
        assert!(is_manifest_key(&manifest_key_in(&item)));
        assert!(!is_manifest_key("out/a/notmanifest.json"));
        assert!(!is_manifest_key("out/a/b.jpg/large.jpg"));
    }

    #[test]
    fn only_outputs_parse_as_files_served_at_a_stable_address() {
        let id = UploadId::new(Utc::now());
        let output = |name, width, format| {
            Some(OutputFile {
                name,
                revision: 0,
                width,
                format,
            })
        };
        assert_eq!(
            parse_output_file("large.jpg"),
            output("large", None, Format::Jpeg)
        );
        assert_eq!(
            parse_output_file("thumb-webp.webp"),
            output("thumb-webp", None, Format::Webp)
        );
        let variant = parse_output_file("large.w640.jpg");
        assert_eq!(variant, output("large", Some(640), Format::Jpeg));
        assert_eq!(variant.unwrap().key(id), format!("{id}/large.w640.jpg"));
        assert_eq!(
            parse_output_file("large.jpg").unwrap().key(id),
            format!("{id}/large.jpg")
        );
        assert_eq!(
            image_path(&variant.unwrap().key(id)),
            format!("/i/{id}/large.w640.jpg")
        );
        // A later revision's outputs, and their sizes on demand.
        let revised = parse_output_file("large.r2.w640.jpg").unwrap();
        assert_eq!((revised.name, revised.revision), ("large", 2));
        assert_eq!(revised.width, Some(640));
        assert_eq!(revised.key(id), format!("{id}/large.r2.w640.jpg"));
        let revised = parse_output_file("large.r12.webp").unwrap();
        assert_eq!((revised.revision, revised.width), (12, None));
        assert_eq!(revised.key(id), format!("{id}/large.r12.webp"));
        assert_eq!(
            parse_image_request("large.r3.auto"),
            Some(ImageRequest::Auto {
                name: "large",
                revision: 3,
                width: None
            })
        );
        for not_an_output in [
            "manifest.json",
            "claim",
            "manifest.jpg",
            "manifest.w640.jpg",
            "large.JPG",
            "large.jpeg",
            ".jpg",
            "../x/large.jpg",
            "Large.jpg",
            "a.b.jpg",
            "large.jpg.json",
            "large.w.jpg",
            "large.w0640.jpg",
            "large.w-1.jpg",
            "large.w99999999999.jpg",
            "large.w640.w320.jpg",
            ".w640.jpg",
            "large.r0.jpg",
            "large.r01.jpg",
            "large.r.jpg",
            "large.w640.r2.jpg",
            "large.r2.r3.jpg",
            "large.r+2.jpg",
            "large.w+640.jpg",
            "large.r2.w640.x.jpg",
        ] {
            assert_eq!(parse_output_file(not_an_output), None, "{not_an_output}");
        }
    }
}
