//! The exclude options of `cairn backup` (restic's names and rules; see
//! `cairn_engine::sources::fs::exclude`). Bad patterns, unreadable exclude files and bad sizes are refused
//! while the command line is parsed: a usage error (exit code 2) that names what to fix.

use std::path::Path;

use cairn_engine::sources::fs::exclude::{self, Excludes, Pattern, TagFile};
use clap::Args;

/// What `cairn backup` leaves out.
#[derive(Args, Clone, Debug, Default)]
pub struct ExcludeArgs {
    /// Leave out files and folders matching PATTERN (repeatable; `*`, `?`, `[...]` within one
    /// path component, `**` across components; a leading `/` anchors it at the root, a leading
    /// `!` takes back what earlier patterns matched)
    #[arg(long, value_name = "PATTERN", value_parser = pattern)]
    exclude: Vec<String>,
    /// Like --exclude, ignoring upper and lower case
    #[arg(long, value_name = "PATTERN", value_parser = pattern)]
    iexclude: Vec<String>,
    /// Read --exclude patterns from FILE, one per line (blank lines and lines starting with #
    /// are ignored; repeatable)
    #[arg(long, value_name = "FILE", value_parser = pattern_file)]
    exclude_file: Vec<PatternFile>,
    /// Read --iexclude patterns from FILE, like --exclude-file
    #[arg(long, value_name = "FILE", value_parser = pattern_file)]
    iexclude_file: Vec<PatternFile>,
    /// Leave out the contents of folders holding a valid CACHEDIR.TAG (https://bford.info/cachedir/),
    /// except that file
    #[arg(long)]
    exclude_caches: bool,
    /// Leave out the contents of folders holding a file named NAME (that starts with HEADER, if
    /// given), except that file (repeatable)
    #[arg(long, value_name = "NAME[:HEADER]", value_parser = TagFile::parse)]
    exclude_if_present: Vec<TagFile>,
    /// Leave out files larger than SIZE (bytes, or with a suffix k, m, g or t for KiB to TiB)
    #[arg(long, value_name = "SIZE", value_parser = exclude::parse_size)]
    exclude_larger_than: Option<u64>,
}

/// The patterns of one exclude file.
#[derive(Clone, Debug)]
pub struct PatternFile(Vec<String>);

fn pattern(text: &str) -> Result<String, String> {
    Pattern::parse(text)
        .map_err(|why| format!("{why}; fix the pattern (quote it for the shell)"))?;
    Ok(text.to_string())
}

fn pattern_file(path: &str) -> Result<PatternFile, String> {
    exclude::read_pattern_file(Path::new(path)).map(PatternFile)
}

impl ExcludeArgs {
    /// The excludes the options ask for.
    pub fn excludes(&self) -> Excludes {
        let mut out = Excludes::default();
        for (inline, files, ignore_case) in [
            (&self.exclude, &self.exclude_file, false),
            (&self.iexclude, &self.iexclude_file, true),
        ] {
            // restic's order: the command line's patterns, then the files'
            let all: Vec<String> = inline
                .iter()
                .chain(files.iter().flat_map(|f| &f.0))
                .cloned()
                .collect();
            out.add_patterns(&all, ignore_case)
                .expect("patterns are checked while parsing");
        }
        if self.exclude_caches {
            out.add_tag_file(TagFile::cache_dir());
        }
        for tag in &self.exclude_if_present {
            out.add_tag_file(tag.clone());
        }
        out.larger_than = self.exclude_larger_than;
        out
    }
}
