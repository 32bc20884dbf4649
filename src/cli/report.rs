//! `nse report`: merges `nse eval` reports of methods run separately on the same requests into
//! one comparison: `report.json`, `summary.json` (aggregates only), the plots (one line per
//! method) and `summary.md`.

use std::path::PathBuf;

use clap::Args;

use super::common::write_json;
use crate::eval::merge::{markdown_table, merge};
use crate::{Error, Result};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// An `nse eval` report.json (repeat for each run to merge)
    #[arg(long = "from", required = true)]
    from: Vec<PathBuf>,
    /// Output directory: report.json, summary.json, summary.md and plots/*.svg
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let mut reports = vec![];
    for path in &args.from {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        reports.push((path.display().to_string(), value));
    }
    let merged = merge(&reports)?;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let plots = crate::eval::plot::write_svgs(&args.out.join("plots"), &merged.curves)?;
    write_json(&args.out.join("report.json"), &merged.report)?;
    write_json(&args.out.join("summary.json"), &merged.summary)?;
    let table = markdown_table(&merged.curves);
    let summary = args.out.join("summary.md");
    std::fs::write(&summary, &table).map_err(|e| Error::io(&summary, e))?;
    print!("{table}");
    println!(
        "wrote {}, summary.json, {} and {} plots in {}",
        args.out.join("report.json").display(),
        summary.display(),
        plots.len(),
        args.out.join("plots").display()
    );
    Ok(())
}
