//! Links the system's libheif (1.13 or later) when pkg-config finds it and sets
//! `cfg(has_libheif)`; otherwise the crate builds without it, unless the `required`
//! feature asks for a failure instead.

fn main() {
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    match pkg_config::Config::new()
        .atleast_version("1.13")
        .probe("libheif")
    {
        Ok(_) => println!("cargo::rustc-cfg=has_libheif"),
        Err(err) if std::env::var_os("CARGO_FEATURE_REQUIRED").is_some() => {
            panic!(
                "libheif (>= 1.13) is required by the `heif` feature but was not found: \
                 install libheif-dev (Debian) or libheif-devel.\n{err}"
            );
        }
        Err(_) => {
            println!(
                "cargo::warning=libheif not found (Debian: apt-get install libheif-dev): \
                 HEIC photos (iPhones' default) will be refused as unsupported"
            );
        }
    }
}
