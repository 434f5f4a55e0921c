//! Which admin tokens the API accepts.

use std::io::Write;
use std::path::PathBuf;

use crate::app::Onboard;
use crate::error::CoreError;
use crate::secrets::{new_admin_token, AdminTokens, ADMIN_TOKEN_TAG};

/// The accepted tokens, and the token file when this call created it.
#[derive(Debug)]
pub struct AdminSetup {
    pub tokens: AdminTokens,
    pub created: Option<PathBuf>,
}

impl Onboard {
    /// `admin.token_hashes` when set. Otherwise the token in `admin.token_file`,
    /// which is created (mode 0600, named `admin`) when missing, so that a fresh
    /// install is usable and never open. The token itself is never logged.
    pub fn admin_tokens(&self) -> Result<AdminSetup, CoreError> {
        let admin = &self.settings().admin;
        if !admin.token_hashes.is_empty() {
            return Ok(AdminSetup {
                tokens: AdminTokens::new(admin.token_hashes.clone()),
                created: None,
            });
        }
        let path = PathBuf::from(&admin.token_file);
        let setup_error = |what: &str, e: std::io::Error| {
            CoreError::Setup(format!(
                "cannot {what} the admin token file {}: {}",
                path.display(),
                e.kind()
            ))
        };
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| setup_error("read", e))?;
            let token = text.trim();
            if !token.starts_with(ADMIN_TOKEN_TAG) {
                return Err(CoreError::Setup(format!(
                    "the admin token file {} does not hold an admin token",
                    path.display()
                )));
            }
            let hash = onboard_pki::secrets::sha256_hex(token.as_bytes());
            return Ok(AdminSetup {
                tokens: AdminTokens::new(vec![hash]),
                created: None,
            });
        }
        let token = new_admin_token("admin")?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| setup_error("create the directory of", e))?;
        }
        let mut file = open_private(&path).map_err(|e| setup_error("create", e))?;
        file.write_all(format!("{}\n", token.token.expose()).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| setup_error("write", e))?;
        Ok(AdminSetup {
            tokens: AdminTokens::new(vec![token.hash]),
            created: Some(path),
        })
    }
}

/// Creates a new file readable by its owner only.
fn open_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}
