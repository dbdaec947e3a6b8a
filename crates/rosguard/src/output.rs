//! Lines for the operator on standard output.
//!
//! `println!` panics when stdout is a pipe whose reader has gone (`rosguard why ADDR | head -1`,
//! `rosguard list | less` quit early). [`outln!`](crate::outln) writes the same lines, and a
//! reader that went away ends the process quietly, as other command-line tools do.

use std::io::{ErrorKind, Write};

/// Writes one line to stdout. A closed pipe exits with status 0 (nobody is left to read the
/// rest); any other write error is reported on stderr and exits with status 1.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Like `println!`, through [`line`]: no panic when the reader of stdout has gone.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

/// `s` with every control character escaped (`\u{1b}`), so text a router or a state file
/// supplies can never drive the terminal or forge a line.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::printable("plain: ok"), "plain: ok");
        assert_eq!(super::printable("a\x1b[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
    }
}
