//! dns/name.rs: reverse notation (`com.example.www`), the one form in which names are cached,
//! stored, logged and matched by `[log] ignore_domains`, and the one function that writes it.
//!
//! Labels go from the last to the first, lower case (ASCII), joined by dots. A byte of a label
//! that is not printable ASCII, or is a dot or a backslash, is written `\DDD` (three decimal
//! digits), so every dot is a label boundary and every name has exactly one spelling, whether it
//! came from a DNS answer (`parse.rs`), a PTR lookup (`reverse.rs`), a config file
//! (`config/log.rs`) or an imported database (`filter::reverse_notation`).

/// Longest label, in bytes (RFC 1035).
pub const MAX_LABEL: usize = 63;
/// Longest name on the wire, in bytes, length octets and root included (RFC 1035).
pub const MAX_WIRE: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("label {0} is empty (two dots in a row, or a leading dot)")]
    EmptyLabel(usize),
    #[error("label {0} is longer than 63 bytes")]
    LongLabel(usize),
    #[error("the name is longer than 255 bytes")]
    TooLong,
    #[error("label {0} has a bad escape: use \\DDD (000 to 255) or \\ and one character")]
    BadEscape(usize),
}

/// Labels in their DNS order (`www`, `example`, `com`) → `com.example.www`.
pub fn reverse_labels<I>(labels: I) -> String
where
    I: IntoIterator,
    I::IntoIter: DoubleEndedIterator,
    I::Item: AsRef<[u8]>,
{
    let mut out = String::new();
    for (i, label) in labels.into_iter().rev().enumerate() {
        if i > 0 {
            out.push('.');
        }
        for &b in label.as_ref() {
            let b = b.to_ascii_lowercase();
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                out.push(char::from(b));
            } else {
                out.push('\\');
                out.push(char::from(b'0' + b / 100));
                out.push(char::from(b'0' + b / 10 % 10));
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
    out
}

/// The labels of a name written as text (RFC 1035 §5.1 presentation format, as resolvers print
/// names): dots separate labels, `\DDD` and `\X` stand for one byte, one trailing dot is allowed.
pub fn text_labels(text: &str) -> Result<Vec<Vec<u8>>, NameError> {
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.is_empty() {
        return Err(NameError::Empty);
    }
    let mut labels = vec![Vec::new()];
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let n = labels.len() - 1;
        match bytes[i] {
            b'.' => {
                if labels[n].is_empty() {
                    return Err(NameError::EmptyLabel(n));
                }
                labels.push(Vec::new());
                i += 1;
            }
            b'\\' => {
                let (b, used) = escape(&bytes[i + 1..]).ok_or(NameError::BadEscape(n))?;
                labels[n].push(b);
                i += 1 + used;
            }
            b => {
                labels[n].push(b);
                i += 1;
            }
        }
        if labels[n].len() > MAX_LABEL {
            return Err(NameError::LongLabel(n));
        }
    }
    let last = labels.len() - 1;
    if labels[last].is_empty() {
        return Err(NameError::EmptyLabel(last));
    }
    if labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1 > MAX_WIRE {
        return Err(NameError::TooLong);
    }
    Ok(labels)
}

/// The byte an escape stands for (after its backslash) and the bytes it used.
fn escape(rest: &[u8]) -> Option<(u8, usize)> {
    let first = *rest.first()?;
    if !first.is_ascii_digit() {
        return Some((first, 1));
    }
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = digits
        .iter()
        .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
    u8::try_from(v).ok().map(|b| (b, 3))
}

/// A name written as text (`www.Example.com.`) in reverse notation (`com.example.www`).
pub fn reverse_text(text: &str) -> Result<String, NameError> {
    Ok(reverse_labels(text_labels(text)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_turned_around() {
        assert_eq!(reverse_text("www.Example.COM.").unwrap(), "com.example.www");
        assert_eq!(reverse_text("localhost").unwrap(), "localhost");
        assert_eq!(
            reverse_text("a\\.b.x\\092y\\001.org").unwrap(),
            "org.x\\092y\\001.a\\046b"
        );
        assert_eq!(reverse_text("\\065\\066.io").unwrap(), "io.ab");
        assert_eq!(reverse_labels([&b"a b"[..], b"COM"]), "com.a\\032b");
        assert_eq!(reverse_labels(Vec::<Vec<u8>>::new()), "");
    }

    #[test]
    fn bad_text_is_named() {
        assert_eq!(reverse_text(""), Err(NameError::Empty));
        assert_eq!(reverse_text("."), Err(NameError::Empty));
        assert_eq!(reverse_text("a..b"), Err(NameError::EmptyLabel(1)));
        assert_eq!(reverse_text(".a"), Err(NameError::EmptyLabel(0)));
        assert_eq!(reverse_text("a.b.."), Err(NameError::EmptyLabel(2)));
        assert_eq!(reverse_text("a\\25"), Err(NameError::BadEscape(0)));
        assert_eq!(reverse_text("a.\\256"), Err(NameError::BadEscape(1)));
        assert_eq!(reverse_text("a\\"), Err(NameError::BadEscape(0)));
        let long = "a".repeat(64);
        assert_eq!(reverse_text(&long), Err(NameError::LongLabel(0)));
        let many = vec!["abcdefghi"; 26].join(".");
        assert_eq!(reverse_text(&many), Err(NameError::TooLong));
    }
}
