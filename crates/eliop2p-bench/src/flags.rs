//! The bench's command lines. Each mode names the flags it takes; `--help` prints
//! its usage, and an unknown flag or a value that does not parse is an error
//! naming the flag. (Flags were once looked up by name and anything else was
//! ignored: `swarm-sim --help` ran the default simulations, hours of CPU, and
//! `--rate=abc` panicked on an empty list.)

use std::str::FromStr;

use anyhow::{Context as _, bail};

/// What a command line asked for.
pub enum Parsed {
    Help,
    Run(Flags),
}

/// The flags given, checked against the mode's list.
#[derive(Debug)]
pub struct Flags {
    given: Vec<(String, Option<String>)>,
}

/// Checks `args` (the words after the mode) against the flags that take a value
/// (`values`, written `--name=value`) and the switches (`--name`).
pub fn parse_from(
    args: impl IntoIterator<Item = String>,
    values: &[&str],
    switches: &[&str],
) -> anyhow::Result<Parsed> {
    let mut given = Vec::new();
    for a in args {
        if a == "--help" || a == "-h" {
            return Ok(Parsed::Help);
        }
        let Some(flag) = a.strip_prefix("--") else {
            bail!(
                "unexpected argument {a:?} (flags are --name or --name=value; --help lists them)"
            );
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        match (values.contains(&name), switches.contains(&name), value) {
            (true, _, Some(v)) => given.push((name.to_owned(), Some(v.to_owned()))),
            (true, _, None) => bail!("--{name} takes a value: --{name}=..."),
            (false, true, None) => given.push((name.to_owned(), None)),
            (false, true, Some(_)) => bail!("--{name} takes no value"),
            (false, false, _) => bail!("unknown flag --{name} (--help lists the flags)"),
        }
    }
    Ok(Parsed::Run(Flags { given }))
}

/// The process's command line after its first `skip` words (the program, and
/// the mode when there is one); `--help` prints `usage` and exits.
pub fn parse(
    skip: usize,
    usage: &str,
    values: &[&str],
    switches: &[&str],
) -> anyhow::Result<Flags> {
    match parse_from(std::env::args().skip(skip), values, switches)? {
        Parsed::Help => {
            println!("{}", usage.trim());
            std::process::exit(0);
        }
        Parsed::Run(f) => Ok(f),
    }
}

impl Flags {
    /// Whether the switch was given.
    pub fn switch(&self, name: &str) -> bool {
        self.given.iter().any(|(n, v)| n == name && v.is_none())
    }

    /// The value given (the last, when given twice).
    pub fn text(&self, name: &str) -> Option<&str> {
        self.given
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The value given, parsed.
    pub fn opt<T: FromStr>(&self, name: &str) -> anyhow::Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.text(name)
            .map(|v| {
                v.trim()
                    .parse::<T>()
                    .map_err(|e| anyhow::anyhow!("--{name}={v}: {e}"))
            })
            .transpose()
    }

    /// The value given, parsed, or `default`.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        Ok(self.opt(name)?.unwrap_or(default))
    }

    /// Like `get`, and at least `min` (a count of 0 or a rate of 0 is an error
    /// naming the flag, not a run that prints zeros or panics).
    pub fn get_min<T: FromStr + PartialOrd + std::fmt::Display>(&self, name: &str, default: T, min: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.get(name, default)?;
        if v < min {
            bail!("--{name}={v}: at least {min}");
        }
        Ok(v)
    }

    /// Like `list`, every item at least `min`.
    pub fn list_min<T: FromStr + Clone + PartialOrd + std::fmt::Display>(
        &self,
        name: &str,
        default: &[T],
        min: T,
    ) -> anyhow::Result<Vec<T>>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.list(name, default)?;
        if let Some(x) = v.iter().find(|x| **x < min) {
            bail!("--{name}: {x} is below {min}");
        }
        Ok(v)
    }

    /// `--name=COUNT:MBIT` (`--slow`): a count of nodes and a rate in Mbit/s
    /// above 0; `None` when the flag is not given.
    pub fn count_at_mbit(&self, name: &str) -> anyhow::Result<Option<(usize, f64)>> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        let bad = || anyhow::anyhow!("--{name}={v}: want COUNT:MBIT, a count of nodes and a rate in Mbit/s above 0");
        let (k, r) = v.split_once(':').ok_or_else(bad)?;
        let (k, r): (usize, f64) = (k.parse().map_err(|_| bad())?, r.parse().map_err(|_| bad())?);
        if !(r > 0.0 && r.is_finite()) {
            return Err(bad());
        }
        Ok(Some((k, r)))
    }

    /// A comma-separated list, each item parsed (an empty item is an error), or `default`.
    pub fn list<T: FromStr + Clone>(&self, name: &str, default: &[T]) -> anyhow::Result<Vec<T>>
    where
        T::Err: std::fmt::Display,
    {
        let Some(v) = self.text(name) else {
            return Ok(default.to_vec());
        };
        v.split(',')
            .map(|x| {
                x.trim()
                    .parse::<T>()
                    .map_err(|e| anyhow::anyhow!("{x:?}: {e}"))
            })
            .collect::<anyhow::Result<Vec<T>>>()
            .with_context(|| format!("--{name}={v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> anyhow::Result<Flags> {
        match parse_from(
            args.iter().map(|s| s.to_string()),
            &["nodes", "rate"],
            &["kill"],
        )? {
            Parsed::Run(f) => Ok(f),
            Parsed::Help => bail!("help"),
        }
    }

    #[test]
    fn values_lists_and_switches_are_read() {
        let f = run(&["--nodes=8,16", "--kill", "--rate=50"]).unwrap();
        assert_eq!(f.list::<u64>("nodes", &[1]).unwrap(), vec![8, 16]);
        assert_eq!(f.get::<f64>("rate", 200.0).unwrap(), 50.0);
        assert!(f.switch("kill"));
        let f = run(&[]).unwrap();
        assert_eq!(f.list::<u64>("nodes", &[1, 2]).unwrap(), vec![1, 2]);
        assert_eq!(f.opt::<u64>("rate").unwrap(), None);
        assert!(!f.switch("kill"));
    }

    #[test]
    fn help_is_asked_for_anywhere_on_the_line() {
        let p = parse_from(
            ["--nodes=8".to_string(), "--help".to_string()],
            &["nodes"],
            &[],
        )
        .unwrap();
        assert!(matches!(p, Parsed::Help));
    }

    #[test]
    fn mistakes_are_errors_naming_the_flag() {
        let err = |args: &[&str]| format!("{:#}", run(args).unwrap_err());
        assert!(err(&["--node=8"]).contains("unknown flag --node"));
        assert!(err(&["nodes=8"]).contains("unexpected argument"));
        assert!(err(&["--nodes"]).contains("--nodes takes a value"));
        assert!(err(&["--kill=1"]).contains("--kill takes no value"));
        let f = run(&["--nodes=8,x", "--rate=abc"]).unwrap();
        assert!(format!("{:#}", f.list::<u64>("nodes", &[1]).unwrap_err()).contains("--nodes=8,x"));
        assert!(format!("{:#}", f.get::<f64>("rate", 1.0).unwrap_err()).contains("--rate=abc"));
    }

    /// `eliop2p-bench --cluster-only --nodes=0` printed a row of zeros, and
    /// `fanout --nodes=0` panicked inside the bed.
    #[test]
    fn counts_and_rates_below_their_minimum_are_errors_naming_the_flag() {
        let f = run(&["--nodes=4,0", "--rate=0"]).unwrap();
        let e = format!("{:#}", f.list_min::<usize>("nodes", &[1], 1).unwrap_err());
        assert!(e.contains("--nodes: 0 is below 1"), "{e}");
        let e = format!("{:#}", f.get_min::<f64>("rate", 200.0, 0.001).unwrap_err());
        assert!(e.contains("--rate=0: at least 0.001"), "{e}");
        let f = run(&["--nodes=4,8"]).unwrap();
        assert_eq!(f.list_min::<usize>("nodes", &[1], 1).unwrap(), vec![4, 8]);
        assert_eq!(f.get_min::<f64>("rate", 200.0, 0.001).unwrap(), 200.0);
    }

    #[test]
    fn a_count_at_a_rate_is_read_or_an_error_naming_the_flag() {
        assert_eq!(run(&["--rate=4:50"]).unwrap().count_at_mbit("rate").unwrap(), Some((4, 50.0)));
        assert_eq!(run(&[]).unwrap().count_at_mbit("rate").unwrap(), None);
        for bad in ["--rate=4", "--rate=x:50", "--rate=4:0", "--rate=4:-1", "--rate=4:inf"] {
            let e = format!("{:#}", run(&[bad]).unwrap().count_at_mbit("rate").unwrap_err());
            assert!(e.contains("want COUNT:MBIT") && e.contains(bad.trim_start_matches("--")), "{bad}: {e}");
        }
    }
}
