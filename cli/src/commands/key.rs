//! `cairn key …`: adds, lists and removes the repository's passwords.

use std::path::PathBuf;

use anyhow::{Result, bail};
use cairn_engine::format::crypto::keys::KdfParams;
use clap::{Args, Subcommand};
use serde_json::json;

use super::{open, print_json};
use crate::{Global, password};

/// `cairn key` subcommands.
#[derive(Subcommand)]
pub enum KeyCommand {
    /// Add a password
    Add(NewPassword),
    /// List the keys
    List,
    /// Remove a key by id prefix
    Remove {
        /// Key id (prefix)
        id: String,
    },
    /// Change the password used to open the repository
    Passwd(NewPassword),
}

/// Where a new password comes from.
#[derive(Args)]
pub struct NewPassword {
    /// File whose first line is the new password [else CAIRN_NEW_PASSWORD or a prompt]
    #[arg(long)]
    new_password_file: Option<PathBuf>,
}

fn new_password(p: &NewPassword) -> Result<password::Password> {
    password::get(
        p.new_password_file.as_deref(),
        "CAIRN_NEW_PASSWORD",
        "new password",
        true,
    )
}

/// `cairn key …`
pub fn run(g: &Global, k: KeyCommand) -> Result<u8> {
    let mut repo = open(g)?;
    match k {
        KeyCommand::Add(p) => {
            let id = repo.add_key(&new_password(&p)?, KdfParams::default())?;
            if g.json {
                print_json(&json!({"id": id}));
            } else {
                println!("added key {}", id.short());
            }
        }
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if g.json {
                let items: Vec<_> = keys
                    .iter()
                    .map(|(id, k)| json!({"id": id, "current": *id == repo.key_id(), "created": k.created, "host": k.host, "user": k.user}))
                    .collect();
                print_json(&items);
            } else {
                println!("  {:<8}  {:<20}  {:<16}  created", "id", "user", "host");
                for (id, k) in keys {
                    let mark = if id == repo.key_id() { '*' } else { ' ' };
                    println!(
                        "{mark} {:<8}  {:<20}  {:<16}  {}",
                        id.short(),
                        k.user,
                        k.host,
                        k.created.format("%Y-%m-%d %H:%M:%S UTC")
                    );
                }
            }
        }
        KeyCommand::Remove { id } => {
            let keys = repo.list_keys()?;
            let matching: Vec<_> = keys
                .iter()
                .filter(|(k, _)| k.to_hex().starts_with(&id.to_ascii_lowercase()))
                .collect();
            let [(key_id, _)] = matching.as_slice() else {
                bail!(
                    "{} keys match {id:?}: give a unique id prefix from `cairn key list`",
                    matching.len()
                );
            };
            repo.remove_key(key_id)?;
            if !g.json {
                println!("removed key {}", key_id.short());
            }
        }
        KeyCommand::Passwd(p) => {
            let id = repo.change_password(&new_password(&p)?, KdfParams::default())?;
            if !g.json {
                println!("password changed: key {} replaces the old one", id.short());
            }
        }
    }
    Ok(0)
}
