//! One address, the best format each browser takes: `/i/{id}/{output}.auto` serves,
//! among the upload's outputs of `{output}`'s size, AVIF to a browser whose `Accept`
//! names it, else WebP likewise, else `{output}` itself (a JPEG or PNG every browser
//! shows). Pure: the outputs come from the manifest, `Accept` from the request.

use crate::manifest::OutputRecord;
use crate::recipe::Format;

/// Whether an `Accept` header names `media_type` with a quality above zero (a
/// wildcard like `image/*` is not taken as a promise: browsers send it for every
/// image request, whatever they decode).
pub fn accepts(accept: &str, media_type: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let named = parts
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(media_type));
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        named && !refused
    })
}

/// The output to serve for `name` under `accept`: its name and format; `None` when
/// the upload has no output `name`. Another type is chosen only among outputs
/// `can_serve` (at the width asked for, say).
pub fn choose<'a>(
    outputs: &'a [OutputRecord],
    name: &str,
    accept: &str,
    can_serve: impl Fn(&OutputRecord) -> bool,
) -> Option<(&'a str, Format)> {
    let named = outputs.iter().find(|o| o.name == name)?;
    let format_of = |o: &OutputRecord| {
        Format::ALL
            .into_iter()
            .find(|f| f.content_type() == o.content_type)
    };
    let same_size = |o: &&OutputRecord| (o.width, o.height) == (named.width, named.height);
    for preferred in [Format::Avif, Format::Webp] {
        if !accepts(accept, preferred.content_type()) {
            continue;
        }
        if let Some(output) = outputs
            .iter()
            .filter(same_size)
            .filter(|o| can_serve(o))
            .find(|o| format_of(o) == Some(preferred))
        {
            return Some((&output.name, preferred));
        }
    }
    Some((&named.name, format_of(named)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(name: &str, format: Format, width: u32) -> OutputRecord {
        OutputRecord {
            name: name.into(),
            key: format!("x/{name}.{}", format.extension()),
            width,
            height: width / 2,
            bytes: 1,
            content_type: format.content_type().into(),
            frames: None,
        }
    }

    #[test]
    fn the_best_format_the_browser_names_of_the_same_size_is_chosen() {
        let outputs = [
            output("large", Format::Jpeg, 1024),
            output("large-webp", Format::Webp, 1024),
            output("large-avif", Format::Avif, 1024),
            output("thumb-avif", Format::Avif, 256),
            output("thumb", Format::Jpeg, 256),
        ];
        let chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        let old_safari = "image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5";
        let firefox_without_avif = "image/webp,*/*";
        let curl = "*/*";
        assert_eq!(
            choose(&outputs, "large", chrome, |_| true),
            Some(("large-avif", Format::Avif))
        );
        assert_eq!(
            choose(&outputs, "large", old_safari, |_| true),
            Some(("large-webp", Format::Webp))
        );
        assert_eq!(
            choose(&outputs, "large", firefox_without_avif, |_| true),
            Some(("large-webp", Format::Webp))
        );
        assert_eq!(
            choose(&outputs, "large", curl, |_| true),
            Some(("large", Format::Jpeg))
        );
        // Only of the same size: thumb has no WebP, so a WebP browser gets its JPEG.
        assert_eq!(
            choose(&outputs, "thumb", old_safari, |_| true),
            Some(("thumb", Format::Jpeg))
        );
        assert_eq!(
            choose(&outputs, "thumb", chrome, |_| true),
            Some(("thumb-avif", Format::Avif))
        );
        assert_eq!(choose(&outputs, "none", chrome, |_| true), None);
        // Only among those it can serve: at a width only `large` allows, the JPEG.
        let only_large = |o: &OutputRecord| o.name == "large";
        assert_eq!(
            choose(&outputs, "large", chrome, only_large),
            Some(("large", Format::Jpeg))
        );
        // Refused with q=0, and case-insensitive.
        assert_eq!(
            choose(&outputs, "large", "image/avif;q=0, IMAGE/WEBP", |_| true),
            Some(("large-webp", Format::Webp))
        );
    }
}
