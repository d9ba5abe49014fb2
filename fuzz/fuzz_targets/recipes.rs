//! Any text as a recipes file: accepted recipes validate, anything else is a
//! `RecipeError` naming what is wrong; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minilab_core::RecipeBook;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(book) = RecipeBook::with_yaml(text) {
        for recipe in book.iter() {
            recipe.validate().expect("a loaded recipe is valid");
        }
    }
});
