//! Finding the `nats-server` executable.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The release `scripts/nats-server` installs when `NATS_SERVER_VERSION` is unset.
pub const PINNED_VERSION: &str = "2.15.1";

/// Finds the `nats-server` executable: `NATS_SERVER_BIN`, then the project-local install made by
/// `scripts/nats-server` (for `NATS_SERVER_VERSION`, default [`PINNED_VERSION`]), then `PATH`.
///
/// # Errors
/// [`Error::BinaryNotFound`] when none of those has an executable.
pub fn find_binary() -> Result<PathBuf, Error> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(Error::BinaryNotFound {
                looked_at: format!("NATS_SERVER_BIN={}", bin.display()),
            })
        };
    }
    let version = std::env::var("NATS_SERVER_VERSION").unwrap_or_else(|_| PINNED_VERSION.into());
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(".natty")
        .join(format!("nats-server-{version}"))
        .join("bin")
        .join("nats-server");
    if local.is_file() {
        return Ok(local);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.ok_or_else(|| Error::BinaryNotFound {
        looked_at: format!("NATS_SERVER_BIN (unset), {}, PATH", local.display()),
    })
}

/// The version the binary found by [`find_binary`] reports, such as `v2.15.1`.
///
/// # Errors
/// When the binary cannot be found or run.
pub fn server_version() -> Result<String, Error> {
    let bin = find_binary()?;
    let out = Command::new(&bin).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned())
}
