//! Links the system's libjpeg-turbo (TurboJPEG 2.x) when pkg-config finds it and sets
//! `cfg(has_libturbojpeg)`; otherwise the crate builds without it, unless the
//! `required` feature asks for a failure instead.

fn main() {
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    match pkg_config::Config::new()
        .atleast_version("2.0")
        .probe("libturbojpeg")
    {
        Ok(_) => println!("cargo::rustc-cfg=has_libturbojpeg"),
        Err(err) if std::env::var_os("CARGO_FEATURE_REQUIRED").is_some() => {
            panic!(
                "libjpeg-turbo (TurboJPEG >= 2.0) is required by the `turbojpeg` feature but \
                 was not found: install libturbojpeg0-dev (Debian) or libjpeg-turbo-devel.\n{err}"
            );
        }
        Err(_) => {
            println!(
                "cargo::warning=libjpeg-turbo not found (Debian: apt-get install \
                 libturbojpeg0-dev): JPEGs will be decoded by the pure-Rust decoders, \
                 which are slower for large photos"
            );
        }
    }
}
