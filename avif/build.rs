//! Links the system's libavif 0.11 when pkg-config finds it and sets
//! `cfg(has_libavif)`; otherwise the crate builds without it, unless the `required`
//! feature asks for a failure instead. Only 0.11.x: src/linked.rs declares the
//! layout of its structs (1.0 changed them).

fn main() {
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    match pkg_config::Config::new()
        .range_version("0.11".."0.12")
        .probe("libavif")
    {
        Ok(_) => println!("cargo::rustc-cfg=has_libavif"),
        Err(err) if std::env::var_os("CARGO_FEATURE_REQUIRED").is_some() => {
            panic!(
                "libavif 0.11 is required by the `avif` feature but was not found: install \
                 libavif-dev (Debian 12).\n{err}"
            );
        }
        Err(_) => {
            println!(
                "cargo::warning=libavif 0.11 not found (Debian 12: apt-get install \
                 libavif-dev): recipes cannot ask for AVIF outputs"
            );
        }
    }
}
