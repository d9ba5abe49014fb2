//! Recipes: named, validated lists of outputs. The browser picks a recipe by name
//! from this allow-list; it never sends operations of its own.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    /// What the page shows under the recipe's name (none: nothing).
    #[serde(default)]
    pub description: String,
    /// What colour space the outputs are in: sRGB (the default), or the source's own.
    #[serde(default)]
    pub colorspace: Colorspace,
    pub outputs: Vec<OutputSpec>,
}

/// The colour space of a recipe's outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Colorspace {
    /// Pixels converted to sRGB through the source's ICC profile; no profile attached
    /// (untagged is sRGB to every browser).
    #[default]
    Srgb,
    /// The source's pixels as they are, its ICC profile attached to every output
    /// (for wide-gamut displays). CMYK sources become sRGB all the same: no output
    /// format here holds CMYK.
    Keep,
}

/// One image a recipe produces. The source is auto-oriented from its EXIF data
/// before `operations` run, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputSpec {
    /// Names the output's key (`{id}/{name}.{ext}`): lowercase letters, digits, `-`.
    pub name: String,
    #[serde(default)]
    pub operations: Vec<Operation>,
    pub format: Format,
    /// Encoder quality 1–100 (JPEG, lossy WebP); lossless formats ignore it.
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Lossless WebP instead of lossy (WebP only: PNG is always lossless, JPEG never).
    #[serde(default)]
    pub lossless: bool,
    /// Progressive JPEG (loads blurry-first in browsers); baseline otherwise.
    #[serde(default)]
    pub progressive: bool,
    /// AVIF only: libaom's speed, 6 (smaller files, slower) to 10; 9 by default,
    /// where a 1024 px photo takes about 0.1 s (bench/avif.py).
    #[serde(default = "default_avif_speed")]
    pub speed: u8,
    /// The colour transparent pixels are flattened onto for JPEG, `#rrggbb`.
    #[serde(default = "default_background", with = "hex_colour")]
    pub background: [u8; 3],
    /// Smaller widths (px) this output may also be served at, on demand:
    /// `/i/{id}/{name}.w{width}.{ext}` is made from the output the first time it is
    /// asked for, then stored. Any other width is `not-found`. At most
    /// [`MAX_WIDTHS`], each 16–4096.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub widths: Vec<u32>,
    /// WebP and GIF outputs of an animated GIF or WebP keep its frames, delays and
    /// loop count (within the limits' frames and pixels); `false` takes the first
    /// frame, as every other format does.
    #[serde(default = "default_animated")]
    pub animated: bool,
}

fn default_animated() -> bool {
    true
}

/// The most on-demand widths one output may allow.
pub const MAX_WIDTHS: usize = 8;

fn default_background() -> [u8; 3] {
    [255, 255, 255]
}

impl OutputSpec {
    /// An output with every optional field at its default, as a recipe file that
    /// leaves them out gets it.
    pub fn new(name: &str, format: Format, operations: Vec<Operation>) -> Self {
        Self {
            name: name.into(),
            operations,
            format,
            quality: default_quality(),
            lossless: false,
            progressive: false,
            speed: default_avif_speed(),
            background: default_background(),
            widths: Vec::new(),
            animated: default_animated(),
        }
    }
}

/// `#rrggbb` in recipes, three bytes in code.
mod hex_colour {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(rgb: &[u8; 3], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 3], D::Error> {
        let text = String::deserialize(deserializer)?;
        let hex = text
            .strip_prefix('#')
            .filter(|h| h.len() == 6 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                serde::de::Error::custom(format!("background {text:?} is not #rrggbb"))
            })?;
        let byte =
            |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(serde::de::Error::custom);
        Ok([byte(0)?, byte(2)?, byte(4)?])
    }
}

fn default_quality() -> u8 {
    80
}

fn default_avif_speed() -> u8 {
    9
}

/// The most pixels an AVIF output may have: AV1 encoding costs about 0.1 s per
/// 1024×768 at speed 9, so 4 MP bounds one output to about half a second.
pub const MAX_AVIF_PIXELS: u64 = 2048 * 2048;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Operation {
    /// Scale to `width`×`height` as `fit` says; never enlarges unless `enlarge`. A
    /// `cover` keeps the part `gravity` names (the centre by default).
    Resize {
        width: u32,
        height: u32,
        fit: Fit,
        #[serde(default)]
        enlarge: bool,
        #[serde(default, skip_serializing_if = "Gravity::is_center")]
        gravity: Gravity,
    },
    /// Cut a `width`×`height` window (at most the image), placed by `gravity`.
    Crop {
        width: u32,
        height: u32,
        #[serde(default)]
        gravity: Gravity,
    },
    /// Turn clockwise by 90, 180 or 270 degrees.
    Rotate {
        degrees: u16,
    },
    /// Mirror left–right (`horizontal`) or top–bottom (`vertical`).
    Flip {
        direction: Direction,
    },
    Grayscale,
    /// Gaussian blur with this standard deviation in pixels (0.1–50).
    Blur {
        sigma: f32,
    },
    /// Unsharp mask: blur `sigma` (0.1–50), apply where the difference exceeds
    /// `threshold` (0–255).
    Sharpen {
        sigma: f32,
        #[serde(default)]
        threshold: i32,
    },
    /// Add `value` (-255–255) to every channel.
    Brightness {
        value: i32,
    },
    /// Change contrast by `value` percent (-100–100).
    Contrast {
        value: f32,
    },
}

/// Which part of the image a crop keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gravity {
    #[default]
    Center,
    North,
    South,
    East,
    West,
    NorthEast,
    NorthWest,
    SouthEast,
    SouthWest,
    /// What has the most information: strips with the fewest grey levels are cut
    /// first (as libvips's smartcrop `entropy`).
    Entropy,
    /// What draws the eye: edges, saturated colour and skin tones (no model).
    Attention,
    /// The focal point the upload's ticket names (`focus`), else as `attention`.
    Focus,
    /// What `focus` becomes for one image whose ticket names a point: its place in
    /// ten-thousandths of the width and height. Never in a recipe.
    #[serde(skip)]
    Point {
        x: u16,
        y: u16,
    },
}

impl Gravity {
    pub fn is_center(&self) -> bool {
        *self == Gravity::Center
    }
}

/// Where the subject of a photo is, as its uploader says: fractions (0-1) of the
/// width and height as the photo is shown (EXIF orientation applied), from the top
/// left. Crops and covers with `gravity: focus` keep it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FocalPoint {
    pub x: f64,
    pub y: f64,
}

impl FocalPoint {
    /// The point, if both coordinates are within 0-1.
    pub fn new(x: f64, y: f64) -> Option<Self> {
        ((0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y)).then_some(Self { x, y })
    }

    /// As user metadata carries it: `x,y` with four decimals.
    pub fn to_metadata(self) -> String {
        format!("{:.4},{:.4}", self.x, self.y)
    }

    /// From [`FocalPoint::to_metadata`]; `None` for anything else.
    pub fn from_metadata(value: &str) -> Option<Self> {
        let (x, y) = value.split_once(',')?;
        Self::new(x.trim().parse().ok()?, y.trim().parse().ok()?)
    }

    fn gravity(self) -> Gravity {
        let part = |f: f64| (f * 10_000.0).round() as u16;
        Gravity::Point {
            x: part(self.x),
            y: part(self.y),
        }
    }
}

impl Recipe {
    /// The recipe for one image: every `gravity: focus` placed at `point` (as
    /// `attention` without one).
    pub fn focused_on(&self, point: Option<FocalPoint>) -> Recipe {
        let to = point.map_or(Gravity::Attention, FocalPoint::gravity);
        let mut recipe = self.clone();
        for output in &mut recipe.outputs {
            for op in &mut output.operations {
                match op {
                    Operation::Resize { gravity, .. } | Operation::Crop { gravity, .. }
                        if *gravity == Gravity::Focus =>
                    {
                        *gravity = to;
                    }
                    _ => {}
                }
            }
        }
        recipe
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Horizontal,
    Vertical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fit {
    /// Keep the aspect ratio and fit within the box.
    Fit,
    /// Keep the aspect ratio, fill the box and crop the centre.
    Cover,
    /// Stretch to the box (the aspect ratio is not kept); never enlarges a side.
    Fill,
    /// Fit within the box, then pad to exactly the box with `background`, centred.
    Contain,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Jpeg,
    Png,
    /// Lossy at `quality` (libwebp), or lossless with `lossless: true`.
    Webp,
    /// AV1 in HEIF (libavif with libaom) at `quality` and `speed`; needs a build
    /// with libavif (the `avif` cargo feature) and a resize to at most 4 MP first.
    Avif,
    /// A palette of up to 256 colours per frame; keeps an animated source's frames.
    Gif,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Jpeg,
        Format::Png,
        Format::Webp,
        Format::Avif,
        Format::Gif,
    ];

    /// The format whose files end in `.{extension}`.
    pub fn from_extension(extension: &str) -> Option<Format> {
        Self::ALL.into_iter().find(|f| f.extension() == extension)
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Avif => "avif",
            Format::Gif => "gif",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Avif => "image/avif",
            Format::Gif => "image/gif",
        }
    }
}

/// Why a recipe was rejected at start: names the recipe, the output and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recipe {recipe:?}{}: {field}: {problem}", output.as_ref().map(|o| format!(", output {o:?}")).unwrap_or_default())]
pub struct RecipeError {
    pub recipe: String,
    pub output: Option<String>,
    pub field: &'static str,
    pub problem: String,
}

impl Recipe {
    pub fn validate(&self) -> Result<(), RecipeError> {
        let fail = |output: Option<&OutputSpec>, field, problem: &str| RecipeError {
            recipe: self.name.clone(),
            output: output.map(|o| o.name.clone()),
            field,
            problem: problem.to_owned(),
        };
        if !is_name(&self.name) {
            return Err(fail(
                None,
                "name",
                "use 1-40 lowercase letters, digits and '-'",
            ));
        }
        if self.outputs.is_empty() {
            return Err(fail(None, "outputs", "a recipe needs at least one output"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for output in &self.outputs {
            if !is_name(&output.name) || output.name == "manifest" {
                return Err(fail(
                    Some(output),
                    "name",
                    "use 1-40 lowercase letters, digits and '-', not 'manifest'",
                ));
            }
            if !seen.insert(output.name.as_str()) {
                return Err(fail(Some(output), "name", "two outputs have this name"));
            }
            if !(1..=100).contains(&output.quality) {
                return Err(fail(Some(output), "quality", "must be 1-100"));
            }
            if output.lossless && output.format != Format::Webp {
                return Err(fail(
                    Some(output),
                    "lossless",
                    "only webp has a lossless option (png always is, jpeg never)",
                ));
            }
            if let Some((field, problem)) = avif_problem(output) {
                return Err(fail(Some(output), field, problem));
            }
            if output.widths.len() > MAX_WIDTHS
                || output.widths.iter().any(|w| !(16..=4096).contains(w))
            {
                return Err(fail(
                    Some(output),
                    "widths",
                    "at most 8 widths, each 16-4096",
                ));
            }
            for op in &output.operations {
                if let Some((field, problem)) = operation_problem(op) {
                    return Err(fail(Some(output), field, problem));
                }
            }
        }
        Ok(())
    }
}

/// Why an operation's parameters are out of range, if they are: (field, problem).
fn operation_problem(op: &Operation) -> Option<(&'static str, &'static str)> {
    match *op {
        Operation::Resize { width, height, .. }
            if !(1..=8192).contains(&width) || !(1..=8192).contains(&height) =>
        {
            Some(("operations.resize", "width and height must be 1-8192"))
        }
        Operation::Resize { fit, gravity, .. } if fit != Fit::Cover && !gravity.is_center() => {
            Some((
                "operations.resize",
                "gravity is for fit: cover (the others cut nothing)",
            ))
        }
        Operation::Crop { width, height, .. }
            if !(1..=65_535).contains(&width) || !(1..=65_535).contains(&height) =>
        {
            Some(("operations.crop", "width and height must be 1-65535"))
        }
        Operation::Rotate { degrees } if ![90, 180, 270].contains(&degrees) => {
            Some(("operations.rotate", "degrees must be 90, 180 or 270"))
        }
        Operation::Blur { sigma } if !(0.1..=50.0).contains(&sigma) => {
            Some(("operations.blur", "sigma must be 0.1-50"))
        }
        Operation::Sharpen { sigma, threshold }
            if !(0.1..=50.0).contains(&sigma) || !(0..=255).contains(&threshold) =>
        {
            Some((
                "operations.sharpen",
                "sigma must be 0.1-50 and threshold 0-255",
            ))
        }
        Operation::Brightness { value } if !(-255..=255).contains(&value) => {
            Some(("operations.brightness", "value must be -255-255"))
        }
        Operation::Contrast { value } if !(-100.0..=100.0).contains(&value) => {
            Some(("operations.contrast", "value must be -100-100"))
        }
        _ => None,
    }
}

/// Why an output cannot be made as AVIF here, if it is one: no libavif in this build,
/// a speed outside 6–10, or a size that is not bounded by a first resize to at most
/// [`MAX_AVIF_PIXELS`] (nor grown past it by a later one).
fn avif_problem(output: &OutputSpec) -> Option<(&'static str, &'static str)> {
    if output.format != Format::Avif {
        return None;
    }
    if !minilab_avif::AVAILABLE {
        return Some((
            "format",
            "avif needs a build of minilab with libavif (its `avif` cargo feature)",
        ));
    }
    if !(6..=10).contains(&output.speed) {
        return Some(("speed", "must be 6-10 for avif"));
    }
    let resizes_bounded = output.operations.iter().all(|op| match *op {
        Operation::Resize { width, height, .. } => {
            u64::from(width) * u64::from(height) <= MAX_AVIF_PIXELS
        }
        _ => true,
    });
    let starts_with_resize = matches!(output.operations.first(), Some(Operation::Resize { .. }));
    if !(starts_with_resize && resizes_bounded) {
        return Some((
            "operations",
            "an avif output must start with a resize, and no resize may exceed 4 MP (2048×2048)",
        ));
    }
    None
}

/// A recipe's or an output's name: 1-40 lowercase letters, digits and `-`.
pub(crate) fn is_name(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The recipes a deployment offers, by name.
#[derive(Clone, Debug)]
pub struct RecipeBook {
    recipes: BTreeMap<String, Recipe>,
}

impl RecipeBook {
    pub fn new(recipes: impl IntoIterator<Item = Recipe>) -> Result<Self, RecipeError> {
        let mut book = BTreeMap::new();
        for recipe in recipes {
            recipe.validate()?;
            if book.contains_key(&recipe.name) {
                return Err(RecipeError {
                    recipe: recipe.name,
                    output: None,
                    field: "name",
                    problem: "defined twice".into(),
                });
            }
            book.insert(recipe.name.clone(), recipe);
        }
        Ok(Self { recipes: book })
    }

    /// The recipes every deployment has.
    pub fn builtin() -> Self {
        let jpeg = |name: &str, operations| OutputSpec::new(name, Format::Jpeg, operations);
        let webp = |name: &str, operations| OutputSpec::new(name, Format::Webp, operations);
        let fit = |size| Operation::Resize {
            width: size,
            height: size,
            fit: Fit::Fit,
            enlarge: false,
            gravity: Gravity::Center,
        };
        let recipes = vec![
            Recipe {
                name: "web".into(),
                colorspace: Default::default(),
                description: "Fit within 1024×1024 and a 256 px thumbnail, JPEG and WebP q80"
                    .into(),
                outputs: vec![
                    jpeg("large", vec![fit(1024)]),
                    webp("large-webp", vec![fit(1024)]),
                    jpeg("thumb", vec![fit(256)]),
                    webp("thumb-webp", vec![fit(256)]),
                ],
            },
            Recipe {
                name: "large".into(),
                colorspace: Default::default(),
                description: "One image, fit within 1024×1024, JPEG q80".into(),
                outputs: vec![jpeg("large", vec![fit(1024)])],
            },
            Recipe {
                name: "thumbnail".into(),
                colorspace: Default::default(),
                description: "A 256×256 square, cropped to the centre, JPEG".into(),
                outputs: vec![jpeg(
                    "square",
                    vec![Operation::Resize {
                        width: 256,
                        height: 256,
                        fit: Fit::Cover,
                        enlarge: false,
                        gravity: Gravity::Center,
                    }],
                )],
            },
            Recipe {
                name: "grayscale".into(),
                colorspace: Default::default(),
                description: "Black and white, fit within 1024×1024, JPEG".into(),
                outputs: vec![jpeg("gray", vec![fit(1024), Operation::Grayscale])],
            },
        ];
        #[allow(clippy::expect_used)]
        Self::new(recipes).expect("built-in recipes are valid")
    }

    /// The built-in recipes plus those of a YAML document (`recipes: [...]`); a
    /// recipe of the document replaces a built-in one of the same name.
    pub fn with_yaml(yaml: &str) -> Result<Self, RecipeError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Document {
            recipes: Vec<Recipe>,
        }
        let document: Document = serde_yaml::from_str(yaml).map_err(|e| RecipeError {
            recipe: e.location().map_or_else(
                || "?".into(),
                |l| format!("(line {}, column {})", l.line(), l.column()),
            ),
            output: None,
            field: "yaml",
            problem: e.to_string(),
        })?;
        let mut names = std::collections::BTreeSet::new();
        for recipe in &document.recipes {
            if !names.insert(recipe.name.clone()) {
                return Err(RecipeError {
                    recipe: recipe.name.clone(),
                    output: None,
                    field: "name",
                    problem: "defined twice".into(),
                });
            }
        }
        let builtin = Self::builtin()
            .recipes
            .into_values()
            .filter(|r| !names.contains(&r.name));
        Self::new(builtin.chain(document.recipes))
    }

    pub fn get(&self, name: &str) -> Option<&Recipe> {
        self.recipes.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Recipe> {
        self.recipes.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_focal_point_is_fractions_carried_as_metadata_and_placed_where_focus_is_asked() {
        let point = FocalPoint::new(0.25, 1.0).unwrap();
        assert_eq!(point.to_metadata(), "0.2500,1.0000");
        assert_eq!(FocalPoint::from_metadata(&point.to_metadata()), Some(point));
        for bad in ["", "0.5", "1.5,0.5", "-0.1,0.5", "x,y", "NaN,0.5"] {
            assert_eq!(FocalPoint::from_metadata(bad), None, "{bad:?}");
        }
        let crop = |gravity| Operation::Crop {
            width: 10,
            height: 10,
            gravity,
        };
        let recipe = Recipe {
            name: "r".into(),
            colorspace: Colorspace::Srgb,
            description: String::new(),
            outputs: vec![OutputSpec::new(
                "o",
                Format::Png,
                vec![crop(Gravity::Focus), crop(Gravity::North)],
            )],
        };
        let gravities = |recipe: &Recipe| -> Vec<Gravity> {
            recipe.outputs[0]
                .operations
                .iter()
                .map(|op| match op {
                    Operation::Crop { gravity, .. } => *gravity,
                    _ => unreachable!(),
                })
                .collect()
        };
        assert_eq!(
            gravities(&recipe.focused_on(Some(point))),
            [Gravity::Point { x: 2500, y: 10_000 }, Gravity::North]
        );
        assert_eq!(
            gravities(&recipe.focused_on(None)),
            [Gravity::Attention, Gravity::North]
        );
        // A recipe may say `focus`, never a point.
        let yaml = "{op: crop, width: 10, height: 10, gravity: focus}";
        assert!(serde_yaml::from_str::<Operation>(yaml).is_ok());
        let point = "{op: crop, width: 10, height: 10, gravity: point}";
        assert!(serde_yaml::from_str::<Operation>(point).is_err());
    }

    #[test]
    fn builtins_include_web_and_grayscale() {
        let book = RecipeBook::builtin();
        let web = book.get("web").unwrap();
        let formats: Vec<_> = web
            .outputs
            .iter()
            .map(|o| (o.name.as_str(), o.format))
            .collect();
        assert_eq!(
            formats,
            [
                ("large", Format::Jpeg),
                ("large-webp", Format::Webp),
                ("thumb", Format::Jpeg),
                ("thumb-webp", Format::Webp)
            ]
        );
        assert!(web.outputs.iter().all(|o| o.quality == 80 && !o.lossless));
        assert!(book.get("grayscale").is_some());
        assert!(book.get("../web").is_none());
    }

    #[test]
    fn yaml_recipes_add_to_and_replace_the_builtins() {
        let book = RecipeBook::with_yaml(
            r##"
recipes:
  - name: web
    description: smaller web images
    outputs:
      - name: medium
        operations: [{op: resize, width: 640, height: 640, fit: fit}]
        format: jpeg
        quality: 75
        progressive: true
        background: "#102030"
  - name: avatar
    description: a square avatar
    outputs:
      - name: square
        operations: [{op: resize, width: 96, height: 96, fit: cover, gravity: attention}, {op: grayscale}]
        format: png
"##,
        )
        .unwrap();
        assert!(matches!(
            book.get("avatar").unwrap().outputs[0].operations[0],
            Operation::Resize {
                gravity: Gravity::Attention,
                ..
            }
        ));
        let medium = &book.get("web").unwrap().outputs[0];
        assert_eq!(medium.name, "medium");
        assert!(medium.progressive);
        assert_eq!(medium.background, [0x10, 0x20, 0x30]);
        assert!(RecipeBook::with_yaml("recipes: [{name: x, description: d, outputs: [{name: a, format: jpeg, background: white}]}]")
            .unwrap_err()
            .to_string()
            .contains("#rrggbb"));
        assert_eq!(book.get("avatar").unwrap().outputs[0].quality, 80);
        assert!(book.get("grayscale").is_some());
    }

    #[test]
    fn a_description_is_optional() {
        let book =
            RecipeBook::with_yaml("recipes: [{name: plain, outputs: [{name: a, format: png}]}]")
                .unwrap();
        assert_eq!(book.get("plain").unwrap().description, "");
    }

    #[test]
    fn yaml_errors_name_what_is_wrong() {
        let typo = "recipes:\n  - name: x\n    description: d\n    outputs:\n      - {name: a, format: jpeg, qualty: 80}\n";
        let err = RecipeBook::with_yaml(typo).unwrap_err().to_string();
        assert!(err.contains("qualty") && err.contains("line 5"), "{err}");
        let bad = "recipes:\n  - name: x\n    description: d\n    outputs:\n      - {name: a, format: jpeg, quality: 101}\n";
        assert_eq!(
            RecipeBook::with_yaml(bad).unwrap_err().to_string(),
            "recipe \"x\", output \"a\": quality: must be 1-100"
        );
        let twice = "recipes:\n  - {name: x, description: d, outputs: [{name: a, format: png}]}\n  - {name: x, description: d, outputs: [{name: a, format: png}]}\n";
        assert_eq!(RecipeBook::with_yaml(twice).unwrap_err().field, "name");
    }

    #[test]
    fn validation_names_recipe_output_and_field() {
        let mut recipe = RecipeBook::builtin().get("web").cloned().unwrap();
        recipe.outputs[2].quality = 0;
        let err = recipe.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "recipe \"web\", output \"thumb\": quality: must be 1-100"
        );
        recipe.outputs[2].quality = 80;
        recipe.outputs[2].lossless = true;
        assert_eq!(
            recipe.validate().unwrap_err().to_string(),
            "recipe \"web\", output \"thumb\": lossless: only webp has a lossless option (png always is, jpeg never)"
        );
        recipe.outputs[2].lossless = false;
        recipe.outputs[3].lossless = true;
        assert!(recipe.validate().is_ok());
        recipe.outputs[2].name = "large".into();
        assert_eq!(recipe.validate().unwrap_err().field, "name");
    }

    #[test]
    fn operation_parameters_are_validated() {
        let mut recipe = RecipeBook::builtin().get("web").cloned().unwrap();
        for (op, field) in [
            (
                Operation::Resize {
                    width: 10,
                    height: 10,
                    fit: Fit::Fit,
                    enlarge: false,
                    gravity: Gravity::Attention,
                },
                "operations.resize",
            ),
            (Operation::Rotate { degrees: 45 }, "operations.rotate"),
            (Operation::Blur { sigma: 0.0 }, "operations.blur"),
            (
                Operation::Sharpen {
                    sigma: 1.0,
                    threshold: 300,
                },
                "operations.sharpen",
            ),
            (
                Operation::Brightness { value: 256 },
                "operations.brightness",
            ),
            (Operation::Contrast { value: 101.0 }, "operations.contrast"),
        ] {
            recipe.outputs[0].operations = vec![op];
            assert_eq!(recipe.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn avif_outputs_are_bounded_in_size_and_speed() {
        let mut recipe = RecipeBook::builtin().get("large").cloned().unwrap();
        recipe.outputs[0].format = Format::Avif;
        if !minilab_avif::AVAILABLE {
            assert_eq!(recipe.validate().unwrap_err().field, "format");
            return;
        }
        recipe.validate().unwrap();
        let mut slow = recipe.clone();
        slow.outputs[0].speed = 3;
        assert_eq!(slow.validate().unwrap_err().field, "speed");
        let mut unbounded = recipe.clone();
        unbounded.outputs[0].operations = vec![Operation::Grayscale];
        assert_eq!(unbounded.validate().unwrap_err().field, "operations");
        let mut huge = recipe.clone();
        huge.outputs[0].operations = vec![Operation::Resize {
            width: 4096,
            height: 4096,
            fit: Fit::Fit,
            enlarge: false,
            gravity: Gravity::Center,
        }];
        assert_eq!(huge.validate().unwrap_err().field, "operations");
    }
}
