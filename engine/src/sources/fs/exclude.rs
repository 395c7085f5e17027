//! What a backup leaves out on purpose, with restic's rules and names: path patterns
//! (`--exclude`, `--iexclude` and their files), folders marked by a tag file
//! (`--exclude-if-present`, `--exclude-caches`) and files above a size
//! (`--exclude-larger-than`).
//!
//! Patterns follow restic's `filter` package. A pattern is split at `/` into parts, each matched
//! against one path component with Go's `filepath.Match` syntax: `*` (any run of characters
//! within the component), `?` (one character), `[abc]`, `[a-z]`, `[^a-z]` (one character of, or
//! not of, a class) and `\c` (the character `c`); a part `**` matches any number of components.
//! A pattern starting with `/` is anchored: it must match from the first component of the path
//! as backed up. Any other pattern matches any run of consecutive components, so `foo` matches
//! `/a/foo` and `/a/foo/b`, never `/a/foobar`. A pattern that matches a folder leaves out all of
//! it. Patterns are evaluated in order and a pattern starting with `!` takes back what earlier
//! ones matched (it cannot bring back an entry inside a folder already left out, since that
//! folder is never read).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;

use crate::sources::fs::dirfd;

/// The signature a valid `CACHEDIR.TAG` starts with (the Cache Directory Tagging
/// Specification, <https://bford.info/cachedir/>).
pub const CACHEDIR_SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";

/// One character-matching step of a glob.
#[derive(Clone, Debug, PartialEq)]
enum Token {
    /// `*`: any run of bytes.
    Star,
    /// `?`: one character.
    One,
    /// `[...]`: one character in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// A byte that must be there.
    Byte(u8),
}

/// A glob for one path component (Go's `filepath.Match` syntax).
#[derive(Clone, Debug, PartialEq)]
struct Glob(Vec<Token>);

impl Glob {
    fn parse(text: &str) -> Result<Glob, String> {
        let mut tokens = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::One),
                '\\' => {
                    let c = chars
                        .next()
                        .ok_or("it ends with a lone \\ (write \\\\ for a backslash)")?;
                    tokens.extend(c.to_string().bytes().map(Token::Byte));
                }
                '[' => {
                    let negated = chars.next_if_eq(&'^').is_some();
                    let mut ranges = Vec::new();
                    loop {
                        if !ranges.is_empty() && chars.next_if_eq(&']').is_some() {
                            break;
                        }
                        let lo = class_char(&mut chars)?;
                        let hi = match chars.next_if_eq(&'-') {
                            Some(_) => class_char(&mut chars)?,
                            None => lo,
                        };
                        ranges.push((lo, hi));
                    }
                    tokens.push(Token::Class { negated, ranges });
                }
                c => tokens.extend(c.to_string().bytes().map(Token::Byte)),
            }
        }
        Ok(Glob(tokens))
    }

    /// Whether the glob matches all of `name`: a star tries the shortest run first and, when
    /// what follows fails, one byte more (restic's and Go's order; one star to go back to is
    /// enough, since what lies between two stars only needs to be found somewhere).
    fn matches(&self, name: &[u8]) -> bool {
        let tokens = &self.0;
        let (mut t, mut n) = (0, 0);
        let mut back: Option<(usize, usize)> = None;
        loop {
            if t == tokens.len() && n == name.len() {
                return true;
            }
            let step = match tokens.get(t) {
                Some(Token::Star) => {
                    back = Some((t + 1, n));
                    t += 1;
                    continue;
                }
                Some(Token::Byte(b)) => (name.get(n) == Some(b)).then_some(1),
                Some(Token::One) => char_at(&name[n..]).map(|(_, w)| w),
                Some(Token::Class { negated, ranges }) => char_at(&name[n..]).and_then(|(c, w)| {
                    let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                    (inside != *negated).then_some(w)
                }),
                None => None,
            };
            match (step, back) {
                (Some(w), _) => {
                    t += 1;
                    n += w;
                }
                (None, Some((bt, bn))) if bn < name.len() => {
                    back = Some((bt, bn + 1));
                    (t, n) = (bt, bn + 1);
                }
                (None, _) => return false,
            }
        }
    }
}

/// One character of a class: `\` escapes; `-` and `]` must be escaped; the class must close.
fn class_char(chars: &mut std::iter::Peekable<std::str::Chars>) -> Result<char, String> {
    let unclosed = || "a [ class is not closed with ]".to_string();
    let c = match chars.next().ok_or_else(unclosed)? {
        '-' | ']' => return Err("a - or ] in a [ class must be escaped with \\".into()),
        '\\' => chars.next().ok_or_else(unclosed)?,
        c => c,
    };
    match chars.peek() {
        Some(_) => Ok(c),
        None => Err(unclosed()),
    }
}

/// The character at the start of `bytes` and its width; a byte that starts no valid UTF-8
/// character counts as one character (U+FFFD), as in Go.
fn char_at(bytes: &[u8]) -> Option<(char, usize)> {
    let first = *bytes.first()?;
    let width = match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    };
    let decoded = bytes
        .get(..width)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.chars().next());
    Some(decoded.map_or((char::REPLACEMENT_CHARACTER, 1), |c| (c, width)))
}

/// One part of a pattern.
#[derive(Clone, Debug, PartialEq)]
enum Part {
    /// `**`: any number of components.
    AnyDepth,
    /// One component.
    Name(Glob),
}

/// One exclude pattern (see the module documentation).
#[derive(Clone, Debug)]
pub struct Pattern {
    negated: bool,
    anchored: bool,
    parts: Vec<Part>,
}

impl Pattern {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let (negated, body) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let cleaned = clean(body);
        let mut parts: Vec<Part> = cleaned
            .split('/')
            .filter(|p| !p.is_empty())
            .map(|p| match p {
                "**" => Ok(Part::AnyDepth),
                p => Glob::parse(p).map(Part::Name),
            })
            .collect::<Result<_, _>>()?;
        // `**/**` matches what `**` does, in one step of the matcher
        parts.dedup_by(|a, b| *a == Part::AnyDepth && *b == Part::AnyDepth);
        Ok(Pattern {
            negated,
            anchored: cleaned.starts_with('/'),
            parts,
        })
    }

    /// Whether the pattern (ignoring a leading `!`) matches the path made of `comps`
    /// (`absolute`: the path starts at `/`).
    fn matches(&self, absolute: bool, comps: &[&[u8]]) -> bool {
        if self.anchored {
            // from the first component, ending anywhere
            absolute && self.reach(comps, true).into_iter().any(|r| r)
        } else {
            // any non-empty run of components
            !comps.is_empty() && self.reach(comps, false).into_iter().any(|r| r)
        }
    }

    /// `reach[j]`: whether the parts can match a run of components ending before `comps[j]`,
    /// starting at the first component (`from_start`) or anywhere.
    fn reach(&self, comps: &[&[u8]], from_start: bool) -> Vec<bool> {
        let mut reach = vec![!from_start; comps.len() + 1];
        reach[0] = true;
        for part in &self.parts {
            let mut next = vec![false; comps.len() + 1];
            match part {
                Part::AnyDepth => {
                    let mut any = false;
                    for (n, r) in next.iter_mut().zip(&reach) {
                        any |= r;
                        *n = any;
                    }
                }
                Part::Name(glob) => {
                    for (j, comp) in comps.iter().enumerate() {
                        next[j + 1] = reach[j] && glob.matches(comp);
                    }
                }
            }
            reach = next;
            if !reach.contains(&true) {
                break;
            }
        }
        reach
    }
}

/// A path cleaned lexically as Go's `path.Clean` does: no repeated or trailing slashes, no `.`
/// components, `..` resolved where it can be ("." for nothing).
fn clean(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." if out.last().is_some_and(|l| *l != "..") => {
                out.pop();
            }
            ".." if absolute => {}
            c => out.push(c),
        }
    }
    match (absolute, out.is_empty()) {
        (true, _) => format!("/{}", out.join("/")),
        (false, true) => ".".into(),
        (false, false) => out.join("/"),
    }
}

/// Patterns evaluated together, in order (restic keeps `--exclude` and `--iexclude` patterns
/// in two such lists, each deciding on its own).
#[derive(Clone, Debug, Default)]
pub struct PatternList {
    patterns: Vec<Pattern>,
    ignore_case: bool,
}

impl PatternList {
    /// The list of `texts` (empty ones are ignored); with `ignore_case`, patterns and paths are
    /// compared in lower case. The error names the first bad pattern and what is wrong with it.
    pub fn new(texts: &[String], ignore_case: bool) -> Result<PatternList, String> {
        let patterns = texts
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| {
                let text = if ignore_case {
                    t.to_lowercase()
                } else {
                    t.clone()
                };
                Pattern::parse(&text).map_err(|why| format!("bad pattern {t:?}: {why}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(PatternList {
            patterns,
            ignore_case,
        })
    }

    /// Whether the list leaves out `path`: the last pattern that matches it is not negated.
    pub fn matches(&self, path: &[u8]) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let lowered;
        let path = if self.ignore_case {
            lowered = lower_case(path);
            &lowered
        } else {
            path
        };
        let comps: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        let absolute = path.first() == Some(&b'/');
        let mut matched = false;
        for p in &self.patterns {
            if p.negated {
                matched = matched && !p.matches(absolute, &comps);
            } else if !matched {
                matched = p.matches(absolute, &comps);
            }
        }
        matched
    }

    fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// `bytes` with every valid UTF-8 character in lower case; other bytes are kept.
fn lower_case(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.extend_from_slice(chunk.valid().to_lowercase().as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// The patterns of an exclude file: one per line, surrounding white space removed, blank lines
/// and lines starting with `#` ignored. The error names the file (and line) and what to fix.
pub fn read_pattern_file(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text =
        String::from_utf8(text).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let mut patterns = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        Pattern::parse(line)
            .map_err(|why| format!("{}:{}: bad pattern {line:?}: {why}", path.display(), n + 1))?;
        patterns.push(line.to_string());
    }
    Ok(patterns)
}

/// A tag file that marks a folder whose contents are left out (the folder and the tag file
/// itself are kept): `--exclude-if-present NAME[:HEADER]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TagFile {
    name: OsString,
    header: Vec<u8>,
}

impl TagFile {
    /// Parses `NAME[:HEADER]`: a file named NAME (no wildcards) that, if HEADER is given, must
    /// start with it.
    pub fn parse(spec: &str) -> Result<TagFile, String> {
        let (name, header) = spec.split_once(':').unwrap_or((spec, ""));
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(format!(
                "{spec:?}: give a file name (NAME or NAME:HEADER), without slashes"
            ));
        }
        Ok(TagFile {
            name: name.into(),
            header: header.as_bytes().to_vec(),
        })
    }

    /// `CACHEDIR.TAG` with its signature (`--exclude-caches`).
    pub fn cache_dir() -> TagFile {
        TagFile {
            name: "CACHEDIR.TAG".into(),
            header: CACHEDIR_SIGNATURE.as_bytes().to_vec(),
        }
    }

    /// Whether this tag marks the open folder `dir` (at `path`), whose entries are `names`: the
    /// tag is listed and, if a header is required, is a regular file that starts with it (read
    /// through [`dirfd::open_at`], so a FIFO or symlink in its place is never opened). A tag that
    /// cannot be read or lacks the header marks nothing, with a warning.
    fn marks(&self, dir: &File, path: &Path, names: &[OsString]) -> bool {
        if !names.contains(&self.name) {
            return false;
        }
        if self.header.is_empty() {
            return true;
        }
        let tag = path.join(&self.name);
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
        let mut start = Vec::with_capacity(self.header.len());
        let read = dirfd::open_at(dir, &self.name, flags, SFlag::S_IFREG, None)
            .and_then(|(f, _)| f.take(self.header.len() as u64).read_to_end(&mut start));
        match read {
            Ok(_) if start == self.header => true,
            Ok(_) => {
                tracing::warn!(
                    "{}: does not start with {:?}; its folder is backed up",
                    tag.display(),
                    String::from_utf8_lossy(&self.header)
                );
                false
            }
            Err(e) => {
                tracing::warn!(
                    "{}: cannot read the tag file ({e}); its folder is backed up",
                    tag.display()
                );
                false
            }
        }
    }
}

/// Parses a size as restic does: a whole number of bytes, or with a suffix `k`/`K`, `m`/`M`,
/// `g`/`G`, `t`/`T` (KiB to TiB) or `b`/`B` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?}: give a size such as 2048, 500k, 1M, 2G or 1T");
    let (digits, unit) = match text.as_bytes().last().ok_or_else(bad)? {
        b'b' | b'B' => (&text[..text.len() - 1], 1u64),
        b'k' | b'K' => (&text[..text.len() - 1], 1 << 10),
        b'm' | b'M' => (&text[..text.len() - 1], 1 << 20),
        b'g' | b'G' => (&text[..text.len() - 1], 1 << 30),
        b't' | b'T' => (&text[..text.len() - 1], 1 << 40),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(bad)
}

/// Everything a backup leaves out on purpose. The paths backed up themselves are never left
/// out (as in restic), only what lies below them.
#[derive(Clone, Debug, Default)]
pub struct Excludes {
    lists: Vec<PatternList>,
    tags: Vec<TagFile>,
    /// Regular files larger than this many bytes are left out.
    pub larger_than: Option<u64>,
    /// Anchored patterns match paths relative to this folder (a volume's root), taken as `/`;
    /// without it they match absolute paths.
    pub anchor: Option<PathBuf>,
}

impl Excludes {
    /// Adds a list of patterns (see [`PatternList::new`]), evaluated on its own.
    pub fn add_patterns(&mut self, texts: &[String], ignore_case: bool) -> Result<(), String> {
        let list = PatternList::new(texts, ignore_case)?;
        if !list.is_empty() {
            self.lists.push(list);
        }
        Ok(())
    }

    /// Adds a tag file that marks folders whose contents are left out.
    pub fn add_tag_file(&mut self, tag: TagFile) {
        self.tags.push(tag);
    }

    /// Whether the patterns leave out the entry at `path` (absolute; matched relative to the
    /// anchor, if any).
    pub fn excludes_path(&self, path: &Path) -> bool {
        if self.lists.is_empty() {
            return false;
        }
        let relative;
        let matched = match self
            .anchor
            .as_deref()
            .and_then(|a| path.strip_prefix(a).ok())
        {
            Some(rest) => {
                relative = Path::new("/").join(rest);
                relative.as_os_str().as_bytes()
            }
            None => path.as_os_str().as_bytes(),
        };
        self.lists.iter().any(|l| l.matches(matched))
    }

    /// Whether a regular file of `size` bytes is left out.
    pub fn excludes_size(&self, size: u64) -> bool {
        self.larger_than.is_some_and(|max| size > max)
    }

    /// The names of the tag files that mark the open folder `dir` (at `path`, holding `names`):
    /// every entry of a marked folder but these tag files is left out; empty if none marks it.
    pub fn marking_tags(&self, dir: &File, path: &Path, names: &[OsString]) -> Vec<&OsStr> {
        self.tags
            .iter()
            .filter(|t| t.marks(dir, path, names))
            .map(|t| t.name.as_os_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        PatternList::new(&[pattern.to_string()], false)
            .unwrap()
            .matches(path.as_bytes())
    }

    /// restic's `matchTests` (internal/filter/filter_test.go), without the empty pattern (which
    /// restic ignores in lists too) and the Windows drive cases.
    #[test]
    fn restic_match_table() {
        let table: &[(&str, &str, bool)] = &[
            ("*.go", "/foo/bar/test.go", true),
            ("*.c", "/foo/bar/test.go", false),
            ("*", "/foo/bar/test.go", true),
            ("**", "/foo/bar/test.go", true),
            ("foo*", "/foo/bar/test.go", true),
            ("bar*", "/foo/bar/test.go", true),
            ("/bar*", "/foo/bar/test.go", false),
            ("bar/*", "/foo/bar/test.go", true),
            ("baz/*", "/foo/bar/test.go", false),
            ("bar/test.go", "/foo/bar/test.go", true),
            ("bar/*.go", "/foo/bar/test.go", true),
            ("ba*/*.go", "/foo/bar/test.go", true),
            ("bb*/*.go", "/foo/bar/test.go", false),
            ("test.*", "/foo/bar/test.go", true),
            ("tesT.*", "/foo/bar/test.go", false),
            ("bar/*", "/foo/bar/baz", true),
            ("bar", "/foo/bar", true),
            ("/foo/bar", "/foo/bar", true),
            ("/foo/bar/", "/foo/bar", true),
            ("/foo/bar", "/foo/baz", false),
            ("/foo/bar", "/foo/baz/", false),
            ("/foo///bar", "/foo/bar", true),
            ("/foo/../bar", "/foo/bar", false),
            ("/foo/../bar", "/bar", true),
            ("/foo", "/foo/baz", true),
            ("/foo/", "/foo/baz", true),
            ("/foo/*", "/foo", false),
            ("/foo/*", "/foo/baz", true),
            ("bar", "/foo/bar/baz", true),
            ("bar", "/foo/bar/test.go", true),
            ("/foo/*test.*", "/foo/bar/test.go", false),
            ("/foo/*/test.*", "/foo/bar/test.go", true),
            ("/foo/*/bar/test.*", "/foo/bar/test.go", false),
            ("/*/*/bar/test.*", "/foo/bar/test.go", false),
            ("/*/*/bar/test.*", "/foo/bar/baz/test.go", false),
            ("/*/*/baz/test.*", "/foo/bar/baz/test.go", true),
            ("/*/foo/bar/test.*", "/foo/bar/baz/test.go", false),
            ("/foo/bar/test.*", "bar/baz/test.go", false),
            ("/x/y/bar/baz/test.*", "bar/baz/test.go", false),
            ("/x/y/bar/baz/test.c", "bar/baz/test.go", false),
            ("baz/test.*", "bar/baz/test.go", true),
            ("baz/tesT.*", "bar/baz/test.go", false),
            ("test.go", "bar/baz/test.go", true),
            ("*.go", "bar/baz/test.go", true),
            ("*.c", "bar/baz/test.go", false),
            ("sdk", "/foo/bar/sdk", true),
            ("sdk", "/foo/bar/sdk/test/sdk_foo.go", true),
            (
                "sdk/*/cpp/*/*vars*.html",
                "/usr/share/doc/libreoffice/sdk/docs/cpp/ref/a00517.html",
                false,
            ),
            (
                "foo/**/bar/*.go",
                "/home/user/foo/work/special/project/bar/test.go",
                true,
            ),
            ("foo/**/bar/*.go", "/home/user/foo/bar/test.go", true),
            ("foo/**/bar/*.go", "x/foo/bar/test.go", true),
            ("foo/**/bar/*.go", "foo/bar/test.go", true),
            ("foo/**/bar/*.go", "foo/bar/baz/bar/test.go", true),
            ("foo/**/bar/*.go", "/home/user/foo/test.c", false),
            ("foo/**/bar/*.go", "bar/foo/main.go", false),
            ("foo/**/bar/*.go", "/foo/bar/main.go", true),
            ("foo/**/bar/*.go", "bar/main.go", false),
            ("foo/**/bar", "/home/user/foo/x/y/bar", true),
            ("foo/**/bar", "/home/user/foo/x/y/bar/main.go", true),
            ("foo/**/bar/**/x", "/home/user/foo/bar/x", true),
            (
                "foo/**/bar/**/x",
                "/home/user/foo/blaaa/blaz/bar/shared/work/x",
                true,
            ),
            ("user/**/important*", "/home/user/work/x/y/hidden/x", false),
            (
                "user/**/hidden*/**/c",
                "/home/user/work/x/y/hidden/z/a/b/c",
                true,
            ),
            // restic's Match examples and documentation
            ("/home/[uU]ser/?.go", "/home/user/F.go", true),
            ("foo", "/dir/foobar", false),
            ("b*ash", "/bin/ash", false),
            ("/bin", "/usr/bin/restic", false),
            (
                "/home/user/repos/**/target",
                "/home/user/repos/a/b/target",
                true,
            ),
            ("a/**/**/b", "/x/a/b", true),
            ("a/**/**/b", "/x/a/y/z/b", true),
            ("a/**/**/b", "/x/a/y/z/c", false),
        ];
        for &(pattern, path, want) in table {
            assert_eq!(matches(pattern, path), want, "{pattern:?} on {path:?}");
        }
    }

    /// restic's `filterListTests`: later `!` patterns take back earlier matches.
    #[test]
    fn restic_list_table() {
        let table: &[(&[&str], &str, bool)] = &[
            (&[], "/foo/bar/test.go", false),
            (&["*.go"], "/foo/bar/test.go", true),
            (&["*.go"], "/foo/bar", false),
            (&["*.c"], "/foo/bar/test.go", false),
            (&["*.go", "*.c"], "/foo/bar/test.go", true),
            (&["*"], "/foo/bar/test.go", true),
            (&["x"], "/foo/bar/test.go", false),
            (&["?"], "/foo/bar/test.go", false),
            (&["?", "x"], "/foo/bar/x", true),
            (&["/*/*/bar/test.*"], "/foo/bar/test.go", false),
            (&["/*/*/bar/test.*", "*.go"], "/foo/bar/test.go", true),
            (&["", "*.c"], "/foo/bar/test.go", false),
            (&["!**", "*.go"], "/foo/bar/test.go", true),
            (&["!**", "*.c"], "/foo/bar/test.go", false),
            (&["/foo/*/test.*", "!*.c"], "/foo/bar/test.c", false),
            (&["/foo/*/test.*", "!*.c"], "/foo/bar/test.go", true),
            (&["/foo/*/*", "!test.*", "*.c"], "/foo/bar/test.go", false),
            (&["/foo/*/*", "!test.*", "*.c"], "/foo/bar/test.c", true),
            (&["/foo/*/*", "!test.*", "*.c"], "/foo/bar/file.go", true),
            (
                &["/**/*", "!/foo", "/foo/*", "!/foo/bar"],
                "/foo/other/test.go",
                true,
            ),
            (
                &["/**/*", "!/foo", "/foo/*", "!/foo/bar"],
                "/foo/bar",
                false,
            ),
            (
                &["/**/*", "!/foo", "/foo/*", "!/foo/bar"],
                "/foo/bar/test.go",
                false,
            ),
            (
                &["/**/*", "!/foo", "/foo/*", "!/foo/bar", "/foo/bar/test*"],
                "/foo/bar/test.go/child",
                true,
            ),
            (&["/foo/bar/*"], "/foo", false),
            (&["/foo/**/test.c"], "/foo/bar/foo/bar/test.c", true),
            (&["/foo/*/test.c"], "/foo/bar/foo/bar/test.c", false),
        ];
        for &(patterns, path, want) in table {
            let texts: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
            let list = PatternList::new(&texts, false).unwrap();
            assert_eq!(
                list.matches(path.as_bytes()),
                want,
                "{patterns:?} on {path:?}"
            );
        }
    }

    #[test]
    fn globs_follow_go_syntax() {
        let glob = |p: &str, name: &[u8]| Glob::parse(p).unwrap().matches(name);
        assert!(glob("[a-c]x", b"bx"));
        assert!(!glob("[^a-c]x", b"bx"));
        assert!(glob("[^a-c]x", b"dx"));
        assert!(glob("\\*", b"*"));
        assert!(!glob("\\*", b"a"));
        assert!(glob("[\\]]", b"]"));
        assert!(
            glob("?", "é".as_bytes()),
            "? takes one character, not one byte"
        );
        assert!(glob("[é]", "é".as_bytes()));
        assert!(glob("?", b"\xff"), "an invalid byte is one character");
        assert!(glob("*a*b*c", b"xxaxxbxxbxc"));
        assert!(!glob("*a*b*c", b"xxaxxbxxbx"));
        assert!(glob("a*", b"a"));
        assert!(!glob("", b"a"));
        for bad in [
            "[", "[a", "[]", "[]a]", "[a-]", "[-a]", "[^", "a\\", "[a-\\",
        ] {
            assert!(Glob::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn ignore_case_lowers_patterns_and_paths() {
        let list = PatternList::new(&["*.JPG".into(), "/Data/ÄRGER".into()], true).unwrap();
        assert!(list.matches(b"/x/photo.jpg"));
        assert!(list.matches(b"/x/PHOTO.Jpg"));
        assert!(list.matches("/DATA/ärger/x".as_bytes()));
        assert!(list.matches(b"/x/\xffPHOTO.JPG"), "invalid bytes are kept");
        assert!(
            !PatternList::new(&["*.JPG".into()], false)
                .unwrap()
                .matches(b"/x/a.jpg")
        );
    }

    #[test]
    fn anchored_patterns_follow_the_anchor() {
        let mut ex = Excludes::default();
        ex.add_patterns(&["/cache".into(), "tmp".into()], false)
            .unwrap();
        assert!(ex.excludes_path(Path::new("/cache")));
        assert!(!ex.excludes_path(Path::new("/vol/cache")));
        ex.anchor = Some(PathBuf::from("/kubelet/pods/u/volumes/v"));
        assert!(ex.excludes_path(Path::new("/kubelet/pods/u/volumes/v/cache")));
        assert!(ex.excludes_path(Path::new("/kubelet/pods/u/volumes/v/cache/x")));
        assert!(!ex.excludes_path(Path::new("/kubelet/pods/u/volumes/v/a/cache")));
        assert!(ex.excludes_path(Path::new("/kubelet/pods/u/volumes/v/a/tmp")));
    }

    #[test]
    fn pattern_files_skip_comments_and_name_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ex");
        std::fs::write(&file, "# comment\n\n  *.o  \n!keep.o\n").unwrap();
        assert_eq!(read_pattern_file(&file).unwrap(), ["*.o", "!keep.o"]);
        std::fs::write(&file, "ok\n[bad\n").unwrap();
        let e = read_pattern_file(&file).unwrap_err();
        assert!(e.contains(":2: bad pattern \"[bad\""), "{e}");
        assert!(
            read_pattern_file(&dir.path().join("none"))
                .unwrap_err()
                .contains("cannot read")
        );
    }

    #[test]
    fn sizes_take_restic_suffixes() {
        assert_eq!(parse_size("2048"), Ok(2048));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("10K"), Ok(10240));
        assert_eq!(parse_size("20m"), Ok(20 << 20));
        assert_eq!(parse_size("3G"), Ok(3 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert_eq!(parse_size("7B"), Ok(7));
        for bad in ["", "k", "-1", "1.5M", "1x", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tag_files_need_a_plain_name() {
        assert_eq!(
            TagFile::parse(".nobackup").unwrap(),
            TagFile {
                name: ".nobackup".into(),
                header: vec![]
            }
        );
        assert_eq!(TagFile::parse("T:abc:d").unwrap().header, b"abc:d");
        for bad in ["", ":x", "a/b", ".."] {
            assert!(TagFile::parse(bad).is_err(), "{bad:?}");
        }
    }
}
