//! The engine's layers, lowest first, and the check that no module uses a layer above its own.
//!
//! The check reads the source files: every `crate::…` and `super::…` path outside comments and
//! `mod tests` is resolved to the layer it names, which must be the file's own layer or a lower
//! one. Tests may use any layer (a test of the folder store runs backups).

use std::path::Path;

/// The layers, lowest first, each as the module paths it holds; a module belongs to the layer
/// of the longest path that prefixes it. The crate root's items (`Error`, `Id`, `host_name`, …)
/// and `error` and `progress` are shared by all.
const LAYERS: &[&[&str]] = &[
    &["error", "progress"],
    &["format"],
    &["repository::store"],
    &["repository"],
    &["sources"],
    &["ops"],
    &["evidence"],
];

/// The items of the crate root (`lib.rs`), which every layer may use.
const ROOT_ITEMS: &[&str] = &[
    "Error",
    "Result",
    "Id",
    "host_name",
    "user_name",
    "env_number",
    "drop_from_page_cache",
];

/// The layer of module path `path` (segments joined by `::`), if it has one.
fn layer_of(path: &str) -> Option<usize> {
    let segments: Vec<&str> = path.split("::").collect();
    if ROOT_ITEMS.contains(&segments[0]) {
        return Some(0);
    }
    let mut best: Option<(usize, usize)> = None;
    for (layer, prefixes) in LAYERS.iter().enumerate() {
        for prefix in *prefixes {
            let p: Vec<&str> = prefix.split("::").collect();
            if segments.starts_with(&p) && best.is_none_or(|(len, _)| p.len() > len) {
                best = Some((p.len(), layer));
            }
        }
    }
    best.map(|(_, layer)| layer)
}

/// The module path of the source file at `file`, relative to `src/` (`a/b/mod.rs` and
/// `a/b.rs` are `a::b`).
fn module_of(file: &str) -> String {
    let file = file.trim_end_matches(".rs");
    let file = file.strip_suffix("/mod").unwrap_or(file);
    file.replace('/', "::")
}

/// The paths a use tree names, from its text `s` on (after `crate::` or `super::`): `a::b`,
/// `a::{b, c::{d}}` → `a::b`, `a::c::d`… (a leading identifier run is enough for the check).
fn use_paths(s: &str) -> Vec<String> {
    fn tree(s: &mut &str, prefix: &str, out: &mut Vec<String>) {
        let mut path = prefix.to_owned();
        loop {
            *s = s.trim_start();
            if let Some(rest) = s.strip_prefix('{') {
                *s = rest;
                loop {
                    *s = s.trim_start();
                    if let Some(rest) = s.strip_prefix('}') {
                        *s = rest;
                        return;
                    }
                    tree(s, &path, out);
                    *s = s.trim_start();
                    *s = s.strip_prefix(',').unwrap_or(s);
                }
            }
            let end = s
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            let (name, rest) = s.split_at(end);
            if name.is_empty() {
                if !path.is_empty() && path != prefix {
                    out.push(path);
                }
                return;
            }
            if name != "self" {
                path = if path.is_empty() {
                    name.to_owned()
                } else {
                    format!("{path}::{name}")
                };
            }
            *s = rest;
            match s.strip_prefix("::") {
                Some(rest) => *s = rest,
                None => {
                    out.push(path);
                    return;
                }
            }
        }
    }
    let mut out = vec![];
    tree(&mut { s }, "", &mut out);
    out
}

/// The code of a source file without comments and without its `mod tests`.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map_or("", |l| l.trim());
        if line.trim() == "#[cfg(test)]" && next.ends_with("mod tests {") {
            break;
        }
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// The paths in `file` (relative to `src/`, with text `text`) that name a layer above the
/// file's own, as `path (layer) in file`; and how many paths were checked.
fn violations(file: &str, text: &str) -> (Vec<String>, usize) {
    let module = module_of(file);
    let own = layer_of(&module).unwrap_or_else(|| panic!("{file}: module {module} has no layer"));
    let code = code_of(text);
    let mut named = vec![];
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        named.extend(use_paths(&code[at + "crate::".len()..]));
    }
    let mut parent: Vec<&str> = module.split("::").collect();
    parent.pop();
    for (at, _) in code.match_indices("super::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut base = parent.clone();
        let mut rest = &code[at + "super::".len()..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let paths = use_paths(rest);
        if paths.is_empty() {
            named.push(base.join("::")); // `super::*`
        }
        for p in paths {
            named.push(if base.is_empty() {
                p
            } else {
                format!("{}::{p}", base.join("::"))
            });
        }
    }
    let mut bad = vec![];
    for path in &named {
        let layer = layer_of(path)
            .unwrap_or_else(|| panic!("{file}: `{path}` is in no layer: add it to LAYERS"));
        if layer > own {
            bad.push(format!("{file} (layer {own}) uses {path} (layer {layer})"));
        }
    }
    (bad, named.len())
}

fn source_files(dir: &Path, src: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, src, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn no_module_uses_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    source_files(&src, &src, &mut files);
    let (mut bad, mut checked) = (vec![], 0);
    for (file, text) in files
        .iter()
        .filter(|(f, _)| f != "lib.rs" && f != "layers.rs")
    {
        let (b, n) = violations(file, text);
        bad.extend(b);
        checked += n;
    }
    assert!(
        files.len() > 50 && checked > 300,
        "only {checked} paths in {} files checked",
        files.len()
    );
    assert!(bad.is_empty(), "imports up a layer:\n{}", bad.join("\n"));
}

#[test]
fn the_check_sees_an_import_up_a_layer() {
    let (bad, _) = violations(
        "repository/store/mod.rs",
        "use crate::format::id::Id;\nuse crate::{error::Result, repository::{Repository, store}};\n",
    );
    assert_eq!(
        bad,
        ["repository/store/mod.rs (layer 2) uses repository::Repository (layer 3)"]
    );
    let (bad, _) = violations(
        "sources/kube/select.rs",
        "let x = super::super::super::ops::gc::run;",
    );
    assert_eq!(
        bad,
        ["sources/kube/select.rs (layer 4) uses ops::gc::run (layer 5)"]
    );
    let (bad, _) = violations(
        "format/tree.rs",
        "// crate::repository::Repository\n#[cfg(test)]\nmod tests {\n    use crate::ops::gc;\n}\n",
    );
    assert!(bad.is_empty(), "{bad:?}");
}
