//! notify::desktop::helper: the `notify-helper` subcommand, run as the desktop user: reads notices
//! as JSON on stdin and calls org.freedesktop.Notifications.Notify on the session bus.
use super::Notice;
use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;
use zbus::blocking::Connection;
use zbus::zvariant::Value;

const DESTINATION: &str = "org.freedesktop.Notifications";
const OBJECT: &str = "/org/freedesktop/Notifications";
const APP_NAME: &str = "picosnitch";
const APP_ICON: &str = "network-wireless";
const INPUT_LIMIT: u64 = 1 << 20;

/// Exit statuses of the helper.
const EXIT_ROOT: i32 = 2;
const EXIT_INPUT: i32 = 3;
const EXIT_BUS: i32 = 4;

#[derive(Debug, thiserror::Error)]
enum HelperError {
    #[error("refusing to run as root: notify-helper runs only as the desktop user")]
    Root,
    #[error("could not read the notices from stdin: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("the notices on stdin are not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("DBUS_SESSION_BUS_ADDRESS is not set")]
    NoAddress,
    #[error("could not connect to the session bus {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("Notify failed for {summary:?}: {source}")]
    Notify {
        summary: String,
        #[source]
        source: Box<zbus::Error>,
    },
}

impl HelperError {
    fn exit_status(&self) -> i32 {
        match self {
            HelperError::Root => EXIT_ROOT,
            HelperError::Stdin(_) | HelperError::Json(_) | HelperError::NoAddress => EXIT_INPUT,
            HelperError::Connect { .. } | HelperError::Notify { .. } => EXIT_BUS,
        }
    }
}

/// Body of `picosnitch notify-helper`; returns the process exit status.
///
/// 0: every notice was delivered. 2: refused because it runs as root. 3: bad input or no bus
/// address. 4: the bus or the notification server failed. The reason goes to stderr.
pub fn helper_main() -> i32 {
    match run() {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("picosnitch notify-helper: {err}");
            err.exit_status()
        }
    }
}

fn run() -> Result<(), HelperError> {
    // SAFETY: getuid and geteuid cannot fail and touch no memory.
    if unsafe { libc::getuid() == 0 || libc::geteuid() == 0 } {
        return Err(HelperError::Root);
    }
    let mut input = Vec::new();
    std::io::stdin()
        .take(INPUT_LIMIT)
        .read_to_end(&mut input)
        .map_err(HelperError::Stdin)?;
    let notices: Vec<Notice> = serde_json::from_slice(&input).map_err(HelperError::Json)?;
    let address = std::env::var("DBUS_SESSION_BUS_ADDRESS").map_err(|_| HelperError::NoAddress)?;
    let connect = |source| HelperError::Connect {
        address: address.clone(),
        source: Box::new(source),
    };
    let bus = zbus::blocking::connection::Builder::address(address.as_str())
        .map_err(connect)?
        .method_timeout(Duration::from_secs(4))
        .build()
        .map_err(connect)?;
    let markup = body_markup(&bus);
    let mut first_error = None;
    for notice in &notices {
        if let Err(err) = notify(&bus, notice, markup) {
            eprintln!("picosnitch notify-helper: {err}");
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Whether the server reads bodies as markup (then `&`, `<`, `>` must be escaped). When it cannot
/// say, assume it does: an escaped body is only uglier, an unescaped one can be misread.
fn body_markup(bus: &Connection) -> bool {
    bus.call_method(
        Some(DESTINATION),
        OBJECT,
        Some(DESTINATION),
        "GetCapabilities",
        &(),
    )
    .and_then(|reply| reply.body().deserialize::<Vec<String>>())
    .map_or(true, |caps| caps.iter().any(|c| c == "body-markup"))
}

fn notify(bus: &Connection, notice: &Notice, markup: bool) -> Result<(), HelperError> {
    let body = if markup {
        escape_markup(&notice.body)
    } else {
        notice.body.clone()
    };
    let mut hints: HashMap<&str, Value> = HashMap::new();
    hints.insert("desktop-entry", Value::from(APP_NAME));
    let actions: Vec<&str> = Vec::new();
    let args = (
        APP_NAME,
        0u32,
        APP_ICON,
        notice.summary.as_str(),
        body.as_str(),
        actions,
        hints,
        -1i32,
    );
    bus.call_method(
        Some(DESTINATION),
        OBJECT,
        Some(DESTINATION),
        "Notify",
        &args,
    )
    .map(drop)
    .map_err(|source| HelperError::Notify {
        summary: notice.summary.clone(),
        source: Box::new(source),
    })
}

fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(escape_markup("/tmp/<b>&x"), "/tmp/&lt;b&gt;&amp;x");
    }

    #[test]
    fn statuses_are_distinct() {
        assert_eq!(HelperError::Root.exit_status(), 2);
        assert_eq!(HelperError::NoAddress.exit_status(), 3);
    }
}
