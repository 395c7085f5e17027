//! Where passwords come from: `--password-file` / `CAIRN_PASSWORD_FILE`, then `CAIRN_PASSWORD`,
//! then a prompt on the terminal.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

/// Password bytes, wiped from memory when dropped.
pub type Password = Zeroizing<Vec<u8>>;

fn from_file(path: &Path) -> Result<Password> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read the password file {}: check the path given with --password-file or CAIRN_PASSWORD_FILE", path.display()))?;
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        bail!(
            "the password file {} is empty: put the password on its first line",
            path.display()
        );
    }
    Ok(Zeroizing::new(line.to_vec()))
}

/// The repository password. `confirm` asks twice at a prompt (for new passwords).
pub fn get(file: Option<&Path>, env_var: &str, what: &str, confirm: bool) -> Result<Password> {
    if let Some(f) = file {
        return from_file(f);
    }
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return Ok(Zeroizing::new(p.into_encoded_bytes()));
    }
    if !std::io::stdin().is_terminal() {
        // CAIRN_TO_PASSWORD goes with CAIRN_TO_PASSWORD_FILE and --to-password-file
        let prefix = env_var
            .trim_start_matches("CAIRN_")
            .trim_end_matches("PASSWORD")
            .to_lowercase()
            .replace('_', "-");
        bail!(
            "no {what} given: set {env_var}_FILE (or --{prefix}password-file) or {env_var}, or run on a terminal to be asked"
        );
    }
    let first = Zeroizing::new(rpassword::prompt_password(format!("enter {what}: "))?);
    if confirm
        && *Zeroizing::new(rpassword::prompt_password(format!("enter {what} again: "))?) != *first
    {
        bail!("the two passwords differ: run the command again");
    }
    if first.is_empty() {
        bail!("an empty password is not allowed");
    }
    Ok(Zeroizing::new(first.as_bytes().to_vec()))
}
