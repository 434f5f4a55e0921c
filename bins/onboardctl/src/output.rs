//! `--output table|json`: every command returns a [`Rendered`] value that prints
//! either way.

use std::io::Write;

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    Table,
    /// JSON for scripts (the API's field names).
    Json,
}

/// A command's result: JSON for scripts, and how a table shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub json: Value,
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    /// A line printed under the table (not in JSON).
    pub note: Option<String>,
    /// Printed as it is instead of a table (a PEM document, say).
    pub raw: Option<String>,
    /// The process exit code after printing (0 unless the command finished with
    /// part of its work failed, as `devices import` with failed rows: 4).
    pub exit_code: u8,
}

impl Rendered {
    pub fn table(json: Value, headers: Vec<&'static str>, rows: Vec<Vec<String>>) -> Self {
        Self {
            json,
            headers,
            rows,
            note: None,
            raw: None,
            exit_code: 0,
        }
    }

    /// A document printed verbatim in table mode, and `json` in JSON mode.
    pub fn document(json: Value, text: String) -> Self {
        Self {
            json,
            headers: Vec::new(),
            rows: Vec::new(),
            note: None,
            raw: Some(text),
            exit_code: 0,
        }
    }

    pub fn with_exit_code(mut self, code: u8) -> Self {
        self.exit_code = code;
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    pub fn to_text(&self, format: OutputFormat) -> Result<String, serde_json::Error> {
        Ok(match format {
            OutputFormat::Json => serde_json::to_string_pretty(&self.json)? + "\n",
            OutputFormat::Table if self.raw.is_some() => self.raw.clone().unwrap_or_default(),
            OutputFormat::Table => {
                let mut out = String::new();
                if !self.rows.is_empty() {
                    let mut table = Table::new();
                    table
                        .load_preset(UTF8_BORDERS_ONLY)
                        .set_header(&self.headers);
                    for row in &self.rows {
                        table.add_row(row);
                    }
                    out.push_str(&table.to_string());
                    out.push('\n');
                }
                if let Some(note) = &self.note {
                    out.push_str(note);
                    out.push('\n');
                }
                out
            }
        })
    }
}

pub fn print(out: &Rendered, format: OutputFormat) -> Result<(), std::io::Error> {
    let text = out.to_text(format).map_err(std::io::Error::other)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}
