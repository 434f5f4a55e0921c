//! `onboardctl ca init | show | crl`.

use std::path::PathBuf;

use clap::Subcommand;
use onboard_core::{CaInit, CoreError, Onboard};
use serde_json::json;

use crate::output::Rendered;
use crate::CliError;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the CA in ca.dir. With SQLite the server also creates a root-only CA
    /// on first start; with PostgreSQL it never does: run this once and mount
    /// ca.dir into every server. The key is encrypted with ca.passphrase_file /
    /// ONBOARD__CA__PASSPHRASE.
    Init {
        /// Create a root and an issuing intermediate; move root.key offline after.
        #[arg(long, conflicts_with = "import_cert")]
        intermediate: bool,
        /// Import an existing CA instead: its certificate chain (issuing CA first,
        /// root last), PEM.
        #[arg(long, requires = "import_key", value_name = "FILE")]
        import_cert: Option<PathBuf>,
        /// The imported CA's private key, PEM (PKCS#8 or traditional).
        #[arg(long, requires = "import_cert", value_name = "FILE")]
        import_key: Option<PathBuf>,
        /// File whose first line decrypts --import-key (never the passphrase itself
        /// on the command line).
        #[arg(long, requires = "import_key", value_name = "FILE")]
        import_key_passphrase_file: Option<PathBuf>,
    },
    /// Show the CA chain and the current CRL's number and next update.
    Show,
    /// Print the current CRL (PEM), or write it to --out.
    Crl {
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Issue the broker's TLS server certificate from this CA (devices then verify
    /// the broker with the chain they already have). Writes NAME.crt, NAME.key
    /// (0600) and chain.pem to --out.
    ServerCert {
        /// Subject CN, usually the broker's host name.
        #[arg(long)]
        cn: String,
        /// A DNS name for the certificate (repeat for several).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// An IP address for the certificate (repeat for several).
        #[arg(long = "ip")]
        ip: Vec<std::net::IpAddr>,
        #[arg(long, default_value_t = 825)]
        days: u32,
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Issue a client certificate for Onboard's own MQTT account (CN =
    /// broker.service_client_id by default), for broker.client_cert_file.
    ServiceCert {
        #[arg(long)]
        cn: Option<String>,
        #[arg(long, default_value_t = 825)]
        days: u32,
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
}

fn write_infra(
    dir: &std::path::Path,
    name: &str,
    cert: &onboard_core::InfraCertificate,
) -> Result<Rendered, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        CliError::Core(CoreError::Setup(format!(
            "cannot create {}: {}",
            dir.display(),
            e.kind()
        )))
    })?;
    let key_path = dir.join(format!("{name}.key"));
    let mut key = crate::keys::create_private(&key_path)?;
    use std::io::Write;
    key.write_all(cert.private_key_pem.expose().as_bytes())
        .map_err(|e| {
            CliError::Core(CoreError::Setup(format!(
                "cannot write {}: {}",
                key_path.display(),
                e.kind()
            )))
        })?;
    for (file, text) in [
        (format!("{name}.crt"), &cert.certificate_pem),
        ("chain.pem".to_owned(), &cert.chain_pem),
    ] {
        let path = dir.join(&file);
        std::fs::write(&path, text).map_err(|e| {
            CliError::Core(CoreError::Setup(format!(
                "cannot write {}: {}",
                path.display(),
                e.kind()
            )))
        })?;
    }
    Ok(Rendered::table(
        json!({"certificate": dir.join(format!("{name}.crt")), "key": key_path, "chain": dir.join("chain.pem"), "not_after": cert.not_after}),
        vec![],
        vec![],
    )
    .with_note(format!("{name}.crt, {name}.key (0600) and chain.pem written to {}", dir.display())))
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| {
        CliError::Core(CoreError::Setup(format!(
            "cannot read {what} {}: {}",
            path.display(),
            e.kind()
        )))
    })
}

pub fn run(command: &CaCommand, onboard: &Onboard) -> Result<Rendered, CliError> {
    match command {
        CaCommand::Init {
            intermediate,
            import_cert,
            import_key,
            import_key_passphrase_file,
        } => {
            let ca = match (import_cert, import_key) {
                (Some(cert), Some(key)) => {
                    let passphrase = match import_key_passphrase_file {
                        Some(file) => {
                            let text = String::from_utf8(read(file, "passphrase file")?).map_err(
                                |_| {
                                    CliError::Core(CoreError::Setup(
                                        "the passphrase file is not text".into(),
                                    ))
                                },
                            )?;
                            Some(onboard_core::Secret::from(
                                text.lines().next().unwrap_or_default(),
                            ))
                        }
                        None => None,
                    };
                    onboard.import_ca(
                        &read(cert, "certificate")?,
                        &read(key, "key")?,
                        passphrase.as_ref(),
                    )?
                }
                _ => onboard.init_ca(&CaInit {
                    intermediate: *intermediate,
                })?,
            };
            let dir = &onboard.settings().ca.dir;
            let mut note = format!("CA created in {dir}: {}", ca.subject());
            if ca.has_intermediate() {
                note.push_str(
                    "\nroot.key is only needed to sign a new intermediate: move it offline",
                );
            }
            Ok(Rendered::table(
                json!({"dir": dir, "subject": ca.subject(), "intermediate": ca.has_intermediate()}),
                vec![],
                vec![],
            )
            .with_note(note))
        }
        CaCommand::Show => {
            let summary = onboard.ca_summary()?;
            let rows = summary
                .chain
                .iter()
                .map(|c| {
                    vec![
                        c.subject.clone(),
                        c.key_description.clone(),
                        c.serial.to_string(),
                        c.not_after.to_rfc3339(),
                        c.fingerprint.to_string(),
                    ]
                })
                .collect();
            let chain: Vec<_> = summary
                .chain
                .iter()
                .map(|c| {
                    json!({
                        "subject": c.subject, "issuer": c.issuer, "serial": c.serial,
                        "not_before": c.not_before, "not_after": c.not_after,
                        "key": c.key_description, "fingerprint_sha256": c.fingerprint,
                        "self_signed": c.self_signed,
                    })
                })
                .collect();
            let crl = summary.crl.as_ref().map(|c| {
                json!({"number": c.number, "this_update": c.this_update, "next_update": c.next_update})
            });
            let note = match &summary.crl {
                Some(c) => format!(
                    "CRL number {} (next update {}); CA key {}",
                    c.number,
                    c.next_update.to_rfc3339(),
                    if summary.key_encrypted {
                        "encrypted"
                    } else {
                        "NOT encrypted"
                    }
                ),
                None => format!(
                    "no CRL published yet; CA key {}",
                    if summary.key_encrypted {
                        "encrypted"
                    } else {
                        "NOT encrypted"
                    }
                ),
            };
            Ok(Rendered::table(
                json!({"dir": summary.dir, "chain": chain, "crl": crl, "key_encrypted": summary.key_encrypted}),
                vec!["SUBJECT", "KEY", "SERIAL", "NOT AFTER", "SHA-256"],
                rows,
            )
            .with_note(note))
        }
        CaCommand::ServerCert {
            cn,
            dns,
            ip,
            days,
            out,
        } => {
            let cert = onboard.issue_server_certificate(cn, dns, ip, *days)?;
            write_infra(out, "server", &cert)
        }
        CaCommand::ServiceCert { cn, days, out } => {
            let name = cn
                .clone()
                .unwrap_or_else(|| onboard.settings().broker.service_client_id.clone());
            let cert = onboard.issue_service_certificate(&name, *days)?;
            write_infra(out, &name, &cert)
        }
        CaCommand::Crl { out } => {
            let crl = onboard.current_crl()?;
            let info = json!({"number": crl.number, "this_update": crl.this_update, "next_update": crl.next_update});
            match out {
                Some(path) => {
                    std::fs::write(path, &crl.pem).map_err(|e| {
                        CliError::Core(CoreError::Setup(format!(
                            "cannot write {}: {}",
                            path.display(),
                            e.kind()
                        )))
                    })?;
                    Ok(Rendered::table(info, vec![], vec![]).with_note(format!(
                        "CRL number {} written to {}",
                        crl.number,
                        path.display()
                    )))
                }
                None => {
                    let mut json = info;
                    json["pem"] = json!(crl.pem);
                    Ok(Rendered::document(json, crl.pem))
                }
            }
        }
    }
}
