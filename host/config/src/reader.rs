//! The pipeline text and the lines of its items: every error names one.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;

/// Reads and validates pipeline files: the text, and where in it an
/// item is. The reading itself is spread over the modules of what is read
/// (`read`, `operator`, `graph`), one `impl` block each.
pub(crate) struct Reader<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
}

impl Reader<'_> {
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    pub(crate) fn err(
        &self,
        offset: Option<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: offset.map(|o| self.line_of(o)),
            message: message.into(),
            help,
        }
    }

    /// The line of `key = ...` inside an entry, or the entry's first line.
    /// toml spans an `[[array]]` entry by its header only, so the entry is
    /// taken to run until the next header.
    pub(crate) fn line_of_key(&self, span: &std::ops::Range<usize>, key: Option<&str>) -> usize {
        if let Some(key) = key {
            let mut offset = span.start;
            for (i, line) in self.text[span.start.min(self.text.len())..]
                .split_inclusive('\n')
                .enumerate()
            {
                if i > 0 && line.trim_start().starts_with('[') {
                    break;
                }
                let t = line.trim_start();
                if t.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
                {
                    return self.line_of(offset);
                }
                offset += line.len();
            }
        }
        self.line_of(span.start)
    }

    pub(crate) fn toml_error(&self, e: toml::de::Error) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: e.span().map(|s| self.line_of(s.start)),
            message: e.message().trim_end().to_string(),
            help: Some("see the pipeline reference in README.md (\"The pipeline file\")".into()),
        }
    }

    /// Deserializes the settings of a `[[sources]]`/`[[sinks]]` entry (its
    /// table without the keys the pipeline handles) with the connector's
    /// own config type.
    pub(crate) fn entry<T: serde::de::DeserializeOwned>(
        &self,
        section: &str,
        name: &str,
        kind: &str,
        span: &std::ops::Range<usize>,
        rest: toml::Table,
    ) -> Result<T, ConfigError> {
        rest.try_into::<T>().map_err(|e| {
            let message = e.message().trim_end().to_string();
            let key = message
                .split('`')
                .nth(1)
                .filter(|_| message.contains("field"));
            ConfigError {
                file: self.file.to_path_buf(),
                line: Some(self.line_of_key(span, key)),
                message: format!("{section} `{name}` ({kind}): {message}"),
                help: Some(format!("see the `{kind}` {section} settings in README.md")),
            }
        })
    }

    /// Map what a connector's `validate` refuses to an error on the line of
    /// the key it names (the first one in backquotes).
    pub(crate) fn connector_check<E: fmt::Display>(
        &self,
        section: &str,
        name: &str,
        kind: &str,
        span: &std::ops::Range<usize>,
        checked: Result<(), E>,
    ) -> Result<(), ConfigError> {
        checked.map_err(|e| {
            let message = e.to_string();
            let key = message.split('`').nth(1);
            let message = message
                .strip_prefix(&format!("{kind}: "))
                .unwrap_or(&message);
            ConfigError {
                file: self.file.to_path_buf(),
                line: Some(self.line_of_key(span, key)),
                message: format!("{section} `{name}` ({kind}): {message}"),
                help: Some(format!("see the `{kind}` {section} settings in README.md")),
            }
        })
    }

    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        resolve(self.file, p)
    }
}

/// `p` relative to the directory of the pipeline `file`, unless absolute.
pub(crate) fn resolve(file: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(p)
    }
}
