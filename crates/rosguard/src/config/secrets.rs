//! Router passwords: from an environment variable or a file, never the config itself. Under
//! systemd a `password_file` the service cannot read is handed over as a credential
//! (`LoadCredential=`), and a file others can read is warned about (never with the password).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use routeros_client::Secret;

/// Where a password comes from, resolved at load time.
pub(super) fn read_password(
    at: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
    base: &Path,
) -> Result<Secret> {
    match (env, file) {
        (Some(_), Some(_)) => bail!("{at}: set only one of password_env and password_file"),
        (Some(var), None) => match std::env::var(var) {
            Ok(v) => Ok(Secret::new(v)),
            Err(std::env::VarError::NotPresent) => {
                bail!("{at}.password_env: environment variable {var} is not set; export it (e.g. in the systemd unit's EnvironmentFile) or use password_file")
            }
            Err(std::env::VarError::NotUnicode(_)) => bail!("{at}.password_env: environment variable {var} is not valid UTF-8"),
        },
        (None, Some(path)) => {
            let path = if path.is_relative() { base.join(path) } else { path.clone() };
            let credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from);
            read_password_file(at, &path, credentials.as_deref())
        }
        (None, None) => bail!(
            "{at}: no password source; set password_env = \"ROSGUARD_PASSWORD\" or password_file = \"/etc/rosguard/password\" (passwords are never written in the config)"
        ),
    }
}

/// The password of `password_file`. Under systemd the service user usually cannot read the
/// file (0600 root); the unit hands it over with `LoadCredential=NAME:PATH`, NAME being the
/// file's name, and systemd puts a copy the service can read in `$CREDENTIALS_DIRECTORY`
/// (`credentials`). That copy is read when it is there, else the file itself. A file that
/// group or others can read is worth a warning (never with the password in it).
pub(super) fn read_password_file(
    at: &str,
    path: &Path,
    credentials: Option<&Path>,
) -> Result<Secret> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.as_deref().unwrap_or("password");
    let original = std::fs::metadata(path);
    if let Ok(meta) = &original {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %shown,
                mode = format!("{mode:04o}"),
                "{at}.password_file {shown} can be read by other users (mode {mode:04o}); chmod 0600 {shown} (under systemd keep it root-owned: the unit passes it with LoadCredential={name}:{shown})"
            );
        }
    }
    let credential = credentials
        .zip(path.file_name())
        .map(|(dir, file)| dir.join(file))
        .filter(|c| c.is_file());
    let text = match credential {
        Some(credential) => {
            let text = std::fs::read_to_string(&credential).map_err(|e| {
                anyhow!("{at}.password_file: cannot read the systemd credential {} (the copy of {shown}): {e}", credential.display())
            })?;
            // The shipped unit's `SetCredential=` default: systemd passes an empty line when
            // the file is missing, so that password_env setups start.
            if text.trim_end_matches(['\r', '\n']).is_empty() {
                if let Err(e) = &original {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        bail!("{at}.password_file: {shown} does not exist (systemd passed an empty credential {name} in its place); create it with the router password, mode 0600 root");
                    }
                }
            }
            text
        }
        None => std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!(
                "{at}.password_file: {shown} does not exist; create it with the router password (mode 0600)"
            ),
            std::io::ErrorKind::PermissionDenied => anyhow!(
                "{at}.password_file: cannot read {shown}: permission denied; under systemd keep it 0600 root and pass it to the service with LoadCredential={name}:{shown} in the unit (rosguard then reads $CREDENTIALS_DIRECTORY/{name}); otherwise make it mode 0600, owned by the user rosguard runs as"
            ),
            _ => anyhow!("{at}.password_file: cannot read {shown}: {e}; it must be a file holding the router password (mode 0600)"),
        })?,
    };
    Ok(Secret::new(text.trim_end_matches(['\r', '\n']).to_owned()))
}
