//! Command lines of the host tools, read with `lexopt`: `--help` prints the tool's usage
//! and exits 0; a bad argument prints the error and the usage and exits 2.

pub use lexopt;
use lexopt::ValueExt;
use std::io::Write;
use std::str::FromStr;

/// Prints `usage` on stdout and exits 0 (the answer to `-h` / `--help`).
pub fn help(usage: &str) -> ! {
    // A closed stdout (`tool --help | head -1`) is no error worth a panic.
    let _ = writeln!(std::io::stdout(), "{}", usage.trim_end());
    std::process::exit(0)
}

/// The options `parse` reads from this process's arguments; on an error, prints it and
/// `usage` on stderr and exits 2.
pub fn parse_or_exit<T>(
    usage: &str,
    parse: impl FnOnce(&mut lexopt::Parser) -> Result<T, lexopt::Error>,
) -> T {
    match parse(&mut lexopt::Parser::from_env()) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}\n\n{}", usage.trim_end());
            std::process::exit(2)
        }
    }
}

/// The next value of `parser` as a number greater than zero.
pub fn positive<T>(parser: &mut lexopt::Parser) -> Result<T, lexopt::Error>
where
    T: FromStr + PartialOrd + Default,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let value: T = parser.value()?.parse()?;
    if value > T::default() {
        Ok(value)
    } else {
        Err("the value must be greater than zero".into())
    }
}

/// The next value of `parser` as a comma-separated list.
pub fn list<T>(parser: &mut lexopt::Parser) -> Result<Vec<T>, lexopt::Error>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let value = parser.value()?.string()?;
    value
        .split(',')
        .map(|item| {
            item.trim()
                .parse()
                .map_err(|e: T::Err| format!("{item:?} in {value:?}: {e}").into())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(args: &[&str]) -> lexopt::Parser {
        lexopt::Parser::from_args(args.iter().copied())
    }

    #[test]
    fn positive_numbers() {
        let mut p = parser(&["--n", "3"]);
        p.next().expect("flag");
        assert_eq!(positive::<u32>(&mut p).expect("3"), 3);
        let mut p = parser(&["--n", "0"]);
        p.next().expect("flag");
        assert!(positive::<u32>(&mut p).is_err());
    }

    #[test]
    fn lists() {
        let mut p = parser(&["--sizes", "0.5, 1,2"]);
        p.next().expect("flag");
        assert_eq!(list::<f64>(&mut p).expect("list"), vec![0.5, 1.0, 2.0]);
        let mut p = parser(&["--sizes", "1,x"]);
        p.next().expect("flag");
        assert!(list::<f64>(&mut p).is_err());
    }
}
