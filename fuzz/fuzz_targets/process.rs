//! Any bytes through decode and every built-in recipe: an `Ok` with outputs that
//! decode, or an error with its code; never a panic, a hang or an allocation past
//! the limits (libFuzzer's -rss_limit_mb and -timeout catch those).
#![no_main]

use libfuzzer_sys::fuzz_target;
use minilab_core::{Limits, RecipeBook, pipeline};

fuzz_target!(|data: &[u8]| {
    // Tighter than the defaults, so a slow input shows up as a timeout, not a crawl.
    let limits = Limits {
        max_pixels: 4_000_000,
        max_width: 8192,
        max_height: 8192,
        time_budget_ms: 5_000,
        ..Limits::default()
    };
    let recipes = RecipeBook::builtin();
    for recipe in recipes.iter() {
        if let Ok(processed) = pipeline::process(data, recipe, &limits) {
            assert_eq!(processed.outputs.len(), recipe.outputs.len());
            for output in &processed.outputs {
                let decoded = image::load_from_memory(&output.bytes).expect("an output decodes");
                assert_eq!((decoded.width(), decoded.height()), (output.width, output.height));
            }
        }
    }
});
