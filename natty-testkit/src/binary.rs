//! Finding the `nats-server` executable, from any project: `NATS_SERVER_BIN`, then the
//! per-user cache, then `PATH`.
//!
//! The cache comes before `PATH` because it holds one release by name (the pinned one, or
//! `NATS_SERVER_VERSION`), so a run finds the same server whatever else is installed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The release looked for in the cache when `NATS_SERVER_VERSION` is unset (natty's
/// `scripts/nats-server` installs it there).
pub const PINNED_VERSION: &str = "2.15.1";

/// The test kit's cache directory: `$NATTY_CACHE_DIR`, else `$XDG_CACHE_HOME/natty`, else
/// `$HOME/.cache/natty`; `None` when none of those is set (a relative `XDG_CACHE_HOME` is
/// ignored, as the XDG spec asks).
pub fn cache_dir() -> Option<PathBuf> {
    Lookup::from_env().cache
}

/// Where [`find_binary`] looks for a cached `nats-server`:
/// `<cache_dir>/nats-server-<version>/nats-server`, for `NATS_SERVER_VERSION` (default
/// [`PINNED_VERSION`]); `None` without a [`cache_dir`].
///
/// ```
/// if let Some(path) = natty_testkit::cached_binary() {
///     println!("put nats-server at {}", path.display());
/// }
/// ```
pub fn cached_binary() -> Option<PathBuf> {
    Lookup::from_env().cached_binary()
}

/// Finds the `nats-server` executable: `NATS_SERVER_BIN` if set (and then only there), else
/// the [`cached_binary`], else the first `nats-server` on `PATH`.
///
/// # Errors
/// [`Error::BinaryNotFound`], saying where it looked and how to get one, when none of those
/// has a file.
pub fn find_binary() -> Result<PathBuf, Error> {
    Lookup::from_env().find()
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

/// What the lookup reads from the environment, kept apart so the decision is testable.
#[derive(Debug, Default)]
struct Lookup {
    bin: Option<OsString>,
    version: String,
    cache: Option<PathBuf>,
    path: Option<OsString>,
}

impl Lookup {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        Self::new(var)
    }

    fn new(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let cache = var("NATTY_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                var("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .filter(|dir| dir.is_absolute())
                    .map(|dir| dir.join("natty"))
            })
            .or_else(|| var("HOME").map(|home| Path::new(&home).join(".cache").join("natty")));
        Self {
            bin: var("NATS_SERVER_BIN"),
            version: var("NATS_SERVER_VERSION")
                .and_then(|v| v.into_string().ok())
                .unwrap_or_else(|| PINNED_VERSION.to_owned()),
            cache,
            path: var("PATH"),
        }
    }

    fn cached_binary(&self) -> Option<PathBuf> {
        let dir = format!("nats-server-{}", self.version);
        Some(self.cache.as_ref()?.join(dir).join("nats-server"))
    }

    fn find(&self) -> Result<PathBuf, Error> {
        let not_found = |looked_at: String| Error::BinaryNotFound {
            looked_at,
            version: self.version.clone(),
            cache: self.cached_binary(),
        };
        if let Some(bin) = &self.bin {
            let bin = PathBuf::from(bin);
            return if bin.is_file() {
                Ok(bin)
            } else {
                Err(not_found(format!(
                    "NATS_SERVER_BIN={}, not a file",
                    bin.display()
                )))
            };
        }
        let cached = self.cached_binary();
        if let Some(cached) = cached.as_ref().filter(|path| path.is_file()) {
            return Ok(cached.clone());
        }
        let on_path = self.path.as_ref().and_then(|paths| {
            std::env::split_paths(paths)
                .map(|dir| dir.join("nats-server"))
                .find(|candidate| candidate.is_file())
        });
        on_path.ok_or_else(|| {
            let cache = match &cached {
                Some(path) => path.display().to_string(),
                None => "no cache (HOME, XDG_CACHE_HOME and NATTY_CACHE_DIR unset)".to_owned(),
            };
            not_found(format!("NATS_SERVER_BIN (unset), {cache}, PATH"))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::fs;
    use std::path::Path;

    use super::Lookup;
    use crate::Error;

    fn lookup(vars: &[(&str, &Path)]) -> Lookup {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.as_os_str().to_owned()))
            .collect();
        Lookup::new(|name| {
            vars.iter()
                .find(|(n, _)| n == name)
                .map(|(_, value)| value.clone())
        })
    }

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "").unwrap();
    }

    #[test]
    fn the_cache_is_natty_cache_dir_else_xdg_cache_home_else_home() {
        let (natty, xdg, home) = (Path::new("/n"), Path::new("/x"), Path::new("/h"));
        let bin = |vars: &[(&str, &Path)]| lookup(vars).cached_binary().unwrap();
        let all = [
            ("NATTY_CACHE_DIR", natty),
            ("XDG_CACHE_HOME", xdg),
            ("HOME", home),
        ];
        assert_eq!(bin(&all), Path::new("/n/nats-server-2.15.1/nats-server"));
        assert_eq!(
            bin(&all[1..]),
            Path::new("/x/natty/nats-server-2.15.1/nats-server")
        );
        assert_eq!(
            bin(&all[2..]),
            Path::new("/h/.cache/natty/nats-server-2.15.1/nats-server")
        );
        let relative_xdg = [("XDG_CACHE_HOME", Path::new("cache")), ("HOME", home)];
        assert_eq!(
            bin(&relative_xdg),
            Path::new("/h/.cache/natty/nats-server-2.15.1/nats-server"),
            "a relative XDG_CACHE_HOME is ignored"
        );
        let other = [
            ("NATS_SERVER_VERSION", Path::new("2.10.26")),
            ("HOME", home),
        ];
        assert_eq!(
            bin(&other),
            Path::new("/h/.cache/natty/nats-server-2.10.26/nats-server")
        );
        assert_eq!(lookup(&[]).cached_binary(), None);
    }

    #[test]
    fn nats_server_bin_wins_then_the_cache_then_path() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, path_dir, own) = (
            dir.path().join("cache"),
            dir.path().join("bin"),
            dir.path().join("own/nats-server"),
        );
        let cached = cache.join("nats-server-2.15.1/nats-server");
        let on_path = path_dir.join("nats-server");
        for file in [&cached, &on_path, &own] {
            touch(file);
        }
        let vars = [
            ("NATS_SERVER_BIN", own.as_path()),
            ("NATTY_CACHE_DIR", cache.as_path()),
            ("PATH", path_dir.as_path()),
        ];
        assert_eq!(lookup(&vars).find().unwrap(), own);
        assert_eq!(lookup(&vars[1..]).find().unwrap(), cached);
        fs::remove_file(&cached).unwrap();
        assert_eq!(lookup(&vars[1..]).find().unwrap(), on_path);
    }

    #[test]
    fn not_found_says_where_it_looked_and_how_to_get_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = lookup(&[("HOME", dir.path()), ("PATH", dir.path())])
            .find()
            .unwrap_err();
        assert!(matches!(err, Error::BinaryNotFound { .. }), "{err:?}");
        let cached = dir
            .path()
            .join(".cache/natty/nats-server-2.15.1/nats-server");
        let text = err.to_string();
        for part in [
            "NATS_SERVER_BIN (unset)",
            "PATH",
            "install nats-server on PATH",
            "set NATS_SERVER_BIN",
            &format!(
                "put the 2.15.1 release's nats-server at {}",
                cached.display()
            ),
        ] {
            assert!(text.contains(part), "{part:?} missing from {text:?}");
        }

        let missing = dir.path().join("missing");
        let err = lookup(&[("NATS_SERVER_BIN", &missing), ("PATH", dir.path())])
            .find()
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "NATS_SERVER_BIN={}, not a file",
                missing.display()
            )),
            "{err}"
        );
    }
}
