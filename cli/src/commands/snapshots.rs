//! `cairn snapshots`: lists the snapshots.

use anyhow::Result;
use clap::Args;
use indicatif::HumanBytes;

use super::{FilterArgs, find_snapshots, open, print_json, snapshot_json};
use crate::Global;

/// `cairn snapshots` options.
#[derive(Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: FilterArgs,
}

/// `cairn snapshots`
pub fn run(g: &Global, a: SnapshotsArgs) -> Result<u8> {
    let repo = open(g)?;
    let all = find_snapshots(&repo, &[], &a.filter)?;
    if g.json {
        print_json(
            &all.iter()
                .map(|(id, s)| snapshot_json(id, s))
                .collect::<Vec<_>>(),
        );
        return Ok(0);
    }
    println!(
        "{:<8}  {:<19}  {:<16}  {:<20}  {:>10}  paths",
        "id", "time (local)", "host", "tags", "size"
    );
    for (id, s) in &all {
        let time = s
            .time
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S");
        let paths: Vec<String> = s.paths.iter().map(|p| p.lossy()).collect();
        println!(
            "{:<8}  {time:<19}  {:<16}  {:<20}  {:>10}  {}",
            id.short(),
            s.host,
            s.tags.join(","),
            HumanBytes(s.summary.bytes).to_string(),
            paths.join(" ")
        );
    }
    println!("{} snapshots", all.len());
    Ok(0)
}
