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

/// Where one output goes under a results prefix.
pub fn output_key_in(prefix: &str, output: &str, extension: &str) -> String {
    format!("{prefix}{output}.{extension}")
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

/// Where the worker writes one output of an upload, in the processed bucket.
pub fn output_key(id: UploadId, output: &str, extension: &str) -> String {
    output_key_in(&upload_prefix(id), output, extension)
}

/// Where the worker writes an upload's manifest, last, in the processed bucket.
pub fn manifest_key(id: UploadId) -> String {
    manifest_key_in(&upload_prefix(id))
}

/// Where an upload's output is served at a stable address (`/i/{id}/{output}.{ext}`,
/// on the API or behind the CDN): the path of [`output_key`] under `/i/`.
pub fn image_path(id: UploadId, output: &str, extension: &str) -> String {
    format!("/i/{}", output_key(id, output, extension))
}

/// Where every image of an upload is served under: `/i/{id}/`.
pub fn image_prefix(id: UploadId) -> String {
    format!("/i/{}", upload_prefix(id))
}

/// Where an output made at another width on demand is kept: `{id}/{output}.w{width}.{ext}`
/// (a `.` is in no output's name, so no output's key can be one).
pub fn variant_key(id: UploadId, output: &str, width: u32, extension: &str) -> String {
    output_key(id, &format!("{output}.w{width}"), extension)
}

/// A file name under an upload's results prefix that is an output or an output at
/// another width ([`parse_output_file`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputFile<'a> {
    pub name: &'a str,
    /// `Some` for `{name}.w{width}.{ext}`.
    pub width: Option<u32>,
    pub format: Format,
}

impl OutputFile<'_> {
    /// The file's key under `id`'s results prefix.
    pub fn key(&self, id: UploadId) -> String {
        let extension = self.format.extension();
        match self.width {
            Some(width) => variant_key(id, self.name, width, extension),
            None => output_key(id, self.name, extension),
        }
    }
}

/// What a file name under an upload's results prefix names, if it can be an output
/// (`large.jpg`) or one at another width (`large.w640.jpg`), or `None`: never the
/// manifest or the claim.
pub fn parse_output_file(file: &str) -> Option<OutputFile<'_>> {
    let (stem, extension) = file.rsplit_once('.')?;
    let format = Format::from_extension(extension)?;
    let (name, width) = parse_stem(stem)?;
    Some(OutputFile {
        name,
        width,
        format,
    })
}

/// What `/i/{id}/{file}` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageRequest<'a> {
    /// A file as stored: `large.jpg`, `large.w640.jpg`.
    File(OutputFile<'a>),
    /// `large.auto`, `large.w640.auto`: the output of `name`'s size in the best
    /// format the browser accepts ([`crate::negotiate`]).
    Auto { name: &'a str, width: Option<u32> },
}

/// `file` as an [`ImageRequest`], or `None` for anything that names no output.
pub fn parse_image_request(file: &str) -> Option<ImageRequest<'_>> {
    match file.strip_suffix(AUTO_EXTENSION) {
        Some(stem) => {
            let (name, width) = parse_stem(stem)?;
            Some(ImageRequest::Auto { name, width })
        }
        None => parse_output_file(file).map(ImageRequest::File),
    }
}

/// The ending of an address whose format the browser's `Accept` chooses.
pub const AUTO_EXTENSION: &str = ".auto";

/// An output's name and the width it is asked at, from `{name}` or `{name}.w{width}`.
fn parse_stem(stem: &str) -> Option<(&str, Option<u32>)> {
    let (name, width) = match stem.rsplit_once(".w") {
        Some((name, digits)) if !digits.starts_with('0') => {
            (name, Some(digits.parse::<u32>().ok()?))
        }
        Some(_) => return None,
        None => (stem, None),
    };
    (is_name(name) && name != "manifest").then_some((name, width))
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
        assert_eq!(output_key(id, "large", "jpg"), format!("{id}/large.jpg"));
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
        assert_eq!(image_path(id, "large", "jpg"), format!("/i/{id}/large.jpg"));
        let output = |name, width, format| {
            Some(OutputFile {
                name,
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
            output_key(id, "large", "jpg")
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
        ] {
            assert_eq!(parse_output_file(not_an_output), None, "{not_an_output}");
        }
    }
}
