//! config::describe: turns TOML syntax errors and figment/serde type errors into one sentence
//! naming the key, the value and what is allowed (and the environment variable it came from).
use super::ConfigError;
use figment::error::{Actual, Kind};
use std::path::Path;

/// Checks the TOML syntax first, so a typo is reported with its line and column.
pub fn check_syntax(path: &Path, text: &str) -> Result<(), ConfigError> {
    let Err(e) = toml::from_str::<toml::Table>(text) else {
        return Ok(());
    };
    let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    Err(ConfigError::Syntax {
        path: path.display().to_string(),
        line,
        column,
        message,
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Every error figment collected, one sentence each.
pub fn figment_error(e: figment::Error) -> String {
    e.into_iter().map(one).collect::<Vec<_>>().join("; ")
}

fn one(e: figment::Error) -> String {
    let key = e.path.join(".");
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    let text = match &e.kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!(
                "{key} = {} is not allowed: use {}",
                value(actual),
                allowed(expected)
            )
        }
        kind if key.is_empty() => kind.to_string(),
        kind => format!("{key}: {kind}"),
    };
    if from_env && !key.is_empty() {
        let var = format!("PICOSNITCH_{}", e.path.join("__").to_ascii_uppercase());
        format!("{text} (set by the environment variable {var})")
    } else {
        text
    }
}

fn value(a: &Actual) -> String {
    match a {
        Actual::Bool(b) => b.to_string(),
        Actual::Unsigned(u) => u.to_string(),
        Actual::Signed(i) => i.to_string(),
        Actual::Float(f) => f.to_string(),
        Actual::Char(c) => format!("{:?}", c.to_string()),
        Actual::Str(s) => format!("{s:?}"),
        Actual::Seq => "[…] (a list)".into(),
        Actual::Map => "{…} (a table)".into(),
        other => other.to_string(),
    }
}

fn allowed(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => {
            let max = match expected {
                "u8" => u64::from(u8::MAX),
                "u16" => u64::from(u16::MAX),
                "u32" => u64::from(u32::MAX),
                _ => u64::MAX,
            };
            format!("a whole number from 0 to {max}")
        }
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "a boolean" => "true or false".into(),
        "a string" => "a string in double quotes".into(),
        "a sequence" => "a list in square brackets, such as [1, 2]".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("x", 0), (1, 1));
        let e = check_syntax(Path::new("/c.toml"), "[database]\nx = = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config: /c.toml: TOML syntax error at line 2"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn friendly_types() {
        assert_eq!(allowed("u32"), "a whole number from 0 to 4294967295");
        assert_eq!(value(&Actual::Str("x".into())), "\"x\"");
        assert_eq!(value(&Actual::Signed(-1)), "-1");
    }
}
