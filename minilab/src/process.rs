//! `minilab process IN --recipe NAME -o DIR`: the pipeline on a local file.

use anyhow::{Context, bail};
use clap::Args;
use minilab_core::pipeline;
use std::io::Read;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ProcessArgs {
    /// The image to process.
    input: PathBuf,
    /// The recipe to run.
    #[arg(long, env = "MINILAB_RECIPE", default_value = "web")]
    recipe: String,
    /// Directory for the outputs (created if missing).
    #[arg(short, long, env = "MINILAB_OUTPUT_DIR")]
    output: PathBuf,
    #[command(flatten)]
    recipes: crate::flags::RecipeArgs,
    #[command(flatten)]
    upload_size: crate::flags::UploadSizeArgs,
    #[command(flatten)]
    limits: crate::limits::LimitArgs,
}

pub fn run(args: ProcessArgs) -> anyhow::Result<()> {
    let recipes = args.recipes.load()?;
    let Some(recipe) = recipes.get(&args.recipe) else {
        let known: Vec<_> = recipes.iter().map(|r| r.name.as_str()).collect();
        bail!(
            "unknown recipe {:?}; known: {}",
            args.recipe,
            known.join(", ")
        );
    };
    let limits = args.limits.limits(args.upload_size.max_upload_bytes);
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("opening {}", args.input.display()))?;
    // Read one byte past the limit, so an oversized file is refused without reading it all.
    let mut bytes = Vec::new();
    file.take(limits.max_bytes + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let processed = pipeline::process(&bytes, recipe, &limits)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let t = &processed.timings;
    eprintln!(
        "decode {:.1} ms, transform {:.1} ms, encode {:.1} ms",
        t.decode.as_secs_f64() * 1e3,
        t.transform.as_secs_f64() * 1e3,
        t.encode.as_secs_f64() * 1e3
    );
    for output in &processed.outputs {
        let path = args
            .output
            .join(format!("{}.{}", output.name, output.format.extension()));
        std::fs::write(&path, &output.bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "{}\t{}x{}\t{} bytes",
            path.display(),
            output.width,
            output.height,
            output.bytes.len()
        );
    }
    Ok(())
}
