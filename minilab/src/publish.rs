//! `minilab publish-web`: puts the embedded upload page into the site bucket that
//! CloudFront serves (the Helm chart runs it as a post-install/upgrade hook Job).

use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct PublishWebArgs {
    /// The site bucket.
    #[arg(long, env = "MINILAB_SITE_BUCKET")]
    bucket: String,
    /// A key prefix for every file (e.g. `app/`); empty for the bucket's root.
    #[arg(long, env = "MINILAB_SITE_PREFIX", default_value = "")]
    prefix: String,
    /// The API's base URL as the page should call it; empty for the page's own origin
    /// (CloudFront sends `/api/*` to the API).
    #[arg(long, env = "MINILAB_API_BASE", default_value = "")]
    api_base: String,
    #[command(flatten)]
    addressing: crate::flags::PathStyleArgs,
}

/// Uploads the script and style sheet (content-hashed names, cached for a year), then
/// index.html (revalidated on every visit), and prints each key it wrote. Files of
/// earlier releases stay, so a page loaded just before the switch keeps working.
pub async fn run(args: PublishWebArgs) -> anyhow::Result<()> {
    let files = minilab_api::web::site(&args.api_base)?;
    if args.prefix.starts_with('/') || args.prefix.contains("..") {
        anyhow::bail!(
            "the prefix must be relative and without `..`: {:?}",
            args.prefix
        );
    }
    let sdk = crate::aws::sdk_config().await;
    let uncounted = Default::default();
    let s3 = crate::aws::s3_client(&sdk, args.addressing.s3_path_style, &uncounted).await;
    for file in files {
        let key = format!("{}{}", args.prefix, file.key);
        let size = file.body.len();
        s3.put_object()
            .bucket(&args.bucket)
            .key(&key)
            .content_type(file.content_type)
            .cache_control(file.cache_control)
            .body(file.body.into())
            .send()
            .await
            .with_context(|| format!("putting s3://{}/{key}", args.bucket))?;
        println!(
            "wrote s3://{}/{key} ({}, {size} bytes, {})",
            args.bucket, file.content_type, file.cache_control
        );
    }
    Ok(())
}
