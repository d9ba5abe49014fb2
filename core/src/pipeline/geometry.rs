//! Fit arithmetic: the sizes a resize produces and the scale it needs. Pure
//! functions of sizes; no pixels.

use crate::recipe::{Fit, Operation, OutputSpec};

/// One resize: a `width`×`height` box, how the picture meets it, and whether it may
/// grow past the source's size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resize {
    pub width: u32,
    pub height: u32,
    pub fit: Fit,
    pub enlarge: bool,
}

impl Resize {
    /// The resize an operation asks for, if it is one.
    pub fn of(operation: &Operation) -> Option<Self> {
        match *operation {
            Operation::Resize {
                width,
                height,
                fit,
                enlarge,
                ..
            } => Some(Self {
                width,
                height,
                fit,
                enlarge,
            }),
            _ => None,
        }
    }

    /// The output's first operation, if it is a resize.
    pub fn first_of(spec: &OutputSpec) -> Option<Self> {
        spec.operations.first().and_then(Self::of)
    }

    /// The size a `width`×`height` source gets: see [`fitted_size`].
    pub fn fitted(&self, width: u32, height: u32) -> (u32, u32) {
        fitted_size(
            width,
            height,
            self.width,
            self.height,
            self.fit,
            self.enlarge,
        )
    }

    /// The size a source is scaled to before `fit` crops or pads it (`Cover` scales
    /// past one side).
    pub fn presized(&self, width: u32, height: u32) -> (u32, u32) {
        match self.fit {
            Fit::Fit | Fit::Fill | Fit::Contain => self.fitted(width, height),
            Fit::Cover => {
                let scale = self.scale(width, height);
                (scale_side(width, scale), scale_side(height, scale))
            }
        }
    }

    /// The factor a `width`×`height` source is scaled by to meet the box: to its
    /// tighter side, or its looser one for `Cover`; at most 1 unless `enlarge`.
    fn scale(&self, width: u32, height: u32) -> f64 {
        fit_scale(
            width,
            height,
            self.width,
            self.height,
            self.fit,
            self.enlarge,
        )
    }

    /// The share of a `width`×`height` source's size this resize keeps, in either
    /// orientation (a box is tried both ways, so EXIF rotation cannot make a decode
    /// smaller than needed); at most 1.
    pub fn share_of(&self, width: u32, height: u32) -> f64 {
        let scale = |w: u32, h: u32| {
            let (sx, sy) = (
                f64::from(self.width) / f64::from(w),
                f64::from(self.height) / f64::from(h),
            );
            match self.fit {
                Fit::Fit | Fit::Contain => sx.min(sy),
                Fit::Cover | Fit::Fill => sx.max(sy),
            }
        };
        scale(width, height).max(scale(height, width)).min(1.0)
    }
}

/// The share of a `width`×`height` source an output's first operation keeps (1
/// when it does not start with a resize).
pub fn first_share(spec: &OutputSpec, width: u32, height: u32) -> f64 {
    Resize::first_of(spec).map_or(1.0, |resize| resize.share_of(width, height))
}

fn fit_scale(width: u32, height: u32, box_w: u32, box_h: u32, fit: Fit, enlarge: bool) -> f64 {
    let (x, y) = (
        f64::from(box_w) / f64::from(width),
        f64::from(box_h) / f64::from(height),
    );
    let scale = if fit == Fit::Cover {
        x.max(y)
    } else {
        x.min(y)
    };
    if enlarge { scale } else { scale.min(1.0) }
}

/// One side scaled by `scale`, rounded, at least 1 pixel.
fn scale_side(side: u32, scale: f64) -> u32 {
    ((f64::from(side) * scale).round() as u32).max(1)
}

/// The size `fit` gives a `width`×`height` source in a `box_w`×`box_h` box, never
/// larger than the source unless `enlarge`.
/// For `Contain` this is the picture inside the padding.
pub fn fitted_size(
    width: u32,
    height: u32,
    box_w: u32,
    box_h: u32,
    fit: Fit,
    enlarge: bool,
) -> (u32, u32) {
    let scale = fit_scale(width, height, box_w, box_h, fit, enlarge);
    match fit {
        Fit::Fit | Fit::Contain | Fit::Cover => (
            scale_side(width, scale).min(box_w),
            scale_side(height, scale).min(box_h),
        ),
        Fit::Fill if enlarge => (box_w, box_h),
        Fit::Fill => (box_w.min(width).max(1), box_h.min(height).max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect_and_never_enlarges() {
        assert_eq!(
            fitted_size(4000, 3000, 1024, 1024, Fit::Fit, false),
            (1024, 768)
        );
        assert_eq!(
            fitted_size(3000, 4000, 1024, 1024, Fit::Fit, false),
            (768, 1024)
        );
        assert_eq!(
            fitted_size(200, 100, 1024, 1024, Fit::Fit, false),
            (200, 100)
        );
        assert_eq!(
            fitted_size(4000, 3000, 256, 256, Fit::Cover, false),
            (256, 256)
        );
        assert_eq!(fitted_size(100, 50, 256, 256, Fit::Cover, false), (100, 50));
        assert_eq!(fitted_size(10_000, 1, 100, 100, Fit::Fit, false), (100, 1));
    }

    #[test]
    fn enlarging_happens_only_when_asked() {
        for (fit, kept, enlarged) in [
            (Fit::Fit, (100, 50), (400, 200)),
            (Fit::Contain, (100, 50), (400, 200)),
            (Fit::Cover, (100, 50), (400, 400)),
            (Fit::Fill, (100, 50), (400, 400)),
        ] {
            assert_eq!(fitted_size(100, 50, 400, 400, fit, false), kept, "{fit:?}");
            assert_eq!(
                fitted_size(100, 50, 400, 400, fit, true),
                enlarged,
                "{fit:?}"
            );
        }
    }

    #[test]
    fn a_cover_is_presized_past_one_side_and_its_share_tries_both_orientations() {
        let cover = Resize {
            width: 256,
            height: 256,
            fit: Fit::Cover,
            enlarge: false,
        };
        assert_eq!(cover.presized(4000, 3000), (341, 256));
        assert_eq!(cover.fitted(4000, 3000), (256, 256));
        let fit = Resize {
            width: 1024,
            height: 512,
            fit: Fit::Fit,
            enlarge: false,
        };
        // 3000×4000 as stored needs 0.128 of it; turned a quarter by its EXIF
        // orientation, 512/3000. The larger is kept.
        assert!((fit.share_of(3000, 4000) - 512.0 / 3000.0).abs() < 1e-9);
        assert_eq!(fit.share_of(100, 100), 1.0);
    }
}
