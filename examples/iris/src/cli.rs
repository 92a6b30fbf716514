//! Hand-written command-line parsing: `--flag value`, `--flag=value`,
//! repeated flags, switches and durations such as `3s` or `500ms`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// Usage text printed by `iris help`.
pub const USAGE: &str = "\
iris: Fisher's Iris softmax regression, trained and served over the Open Inference Protocol

usage: iris <command> [flags]

commands:
  train     --data CSV --model OUT.json --metrics OUT.json
            [--seed 42] [--epochs 2000] [--learning-rate 0.5] [--l2 0.001] [--test-fraction 0.2]
            train on a stratified split and write the model and its test metrics
  evaluate  --model model.json --data CSV --min-accuracy 0.9 [--metrics metrics.json]
            recompute held-out accuracy (same split as training) and gate on it;
            with --metrics, also check that the recorded accuracy matches
  serve     --model model.json [--host 127.0.0.1] [--port 0] [--port-file PATH]
            [--max-lifetime 600s] [--background --pid-file PATH [--log-file PATH]]
            serve the model over HTTP on loopback; --background starts a detached
            server, waits until it is healthy, prints its URL and exits
  stop      --pid-file PATH [--port-file PATH] [--grace 5s]
            stop a background server (SIGTERM, then SIGKILL after the grace period)
  smoke     --port-file PATH [--requests FILE]
            check health, metadata, known predictions and error handling over HTTP
  help      print this message

durations accept ms, s, m and h suffixes (a bare number means seconds).
";

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// `--flag value`, at most once.
    Value,
    /// `--flag value`, any number of times.
    Repeated,
    /// `--flag` with no value.
    Switch,
}

/// One accepted flag of a command.
#[derive(Debug, Clone, Copy)]
pub struct FlagSpec {
    /// Name without the leading `--`.
    pub name: &'static str,
    /// Whether it takes a value and how often it may appear.
    pub arity: Arity,
}

impl FlagSpec {
    /// A flag taking one value.
    pub const fn value(name: &'static str) -> Self {
        Self {
            name,
            arity: Arity::Value,
        }
    }

    /// A flag that may be given several times.
    pub const fn repeated(name: &'static str) -> Self {
        Self {
            name,
            arity: Arity::Repeated,
        }
    }

    /// A flag without a value.
    pub const fn switch(name: &'static str) -> Self {
        Self {
            name,
            arity: Arity::Switch,
        }
    }
}

/// Parsed flags of one command.
#[derive(Debug, Clone)]
pub struct Flags {
    command: &'static str,
    values: Vec<(&'static str, String)>,
    switches: Vec<&'static str>,
}

impl Flags {
    /// Parses `args` (everything after the command name) against `specs`.
    pub fn parse(command: &'static str, specs: &[FlagSpec], args: &[String]) -> Result<Self> {
        let mut flags = Self {
            command,
            values: Vec::new(),
            switches: Vec::new(),
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(flags.error(format!("unexpected argument '{arg}'")));
            };
            let (name, inline) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (body, None),
            };
            let Some(spec) = specs.iter().find(|spec| spec.name == name) else {
                return Err(flags.error(format!("unknown flag --{name}")));
            };
            match spec.arity {
                Arity::Switch => {
                    if inline.is_some() {
                        return Err(flags.error(format!("--{name} does not take a value")));
                    }
                    if flags.switches.contains(&spec.name) {
                        return Err(flags.error(format!("--{name} given twice")));
                    }
                    flags.switches.push(spec.name);
                }
                Arity::Value | Arity::Repeated => {
                    let value = match inline {
                        Some(value) => value,
                        None => match rest.next() {
                            Some(value) if !value.starts_with("--") => value.clone(),
                            _ => return Err(flags.error(format!("--{name} needs a value"))),
                        },
                    };
                    if spec.arity == Arity::Value && flags.get(spec.name).is_some() {
                        return Err(flags.error(format!("--{name} given twice")));
                    }
                    flags.values.push((spec.name, value));
                }
            }
        }
        Ok(flags)
    }

    /// A usage error prefixed with the command, e.g. `iris train: --data is required`.
    pub fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::usage(format!(
            "iris {}: {message} (see 'iris help')",
            self.command
        ))
    }

    /// The value of a flag, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(flag, _)| *flag == name)
            .map(|(_, value)| value.as_str())
    }

    /// All values of a repeated flag, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.values
            .iter()
            .filter(|(flag, _)| *flag == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// The value of a mandatory flag.
    pub fn required(&self, name: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| self.error(format!("--{name} is required")))
    }

    /// A mandatory path flag.
    pub fn required_path(&self, name: &str) -> Result<PathBuf> {
        self.required(name).map(PathBuf::from)
    }

    /// An optional path flag.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }

    /// Whether a switch was given.
    pub fn switch(&self, name: &str) -> bool {
        self.switches.contains(&name)
    }

    /// Parses an optional flag with [`FromStr`].
    pub fn parse_opt<T>(&self, name: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|text| {
                text.trim().parse::<T>().map_err(|err| {
                    self.error(format!("invalid value '{text}' for --{name}: {err}"))
                })
            })
            .transpose()
    }

    /// Parses a flag with [`FromStr`], falling back to `default`.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        Ok(self.parse_opt(name)?.unwrap_or(default))
    }

    /// Parses a duration flag (see [`parse_duration`]), falling back to `default`.
    pub fn duration_or(&self, name: &str, default: Duration) -> Result<Duration> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => parse_duration(text)
                .map_err(|err| self.error(format!("invalid value '{text}' for --{name}: {err}"))),
        }
    }
}

/// Parses `500ms`, `3s`, `1.5s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| "expected a number with an optional unit (ms, s, m, h)".to_owned())?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit '{other}' (use ms, s, m or h)")),
    };
    let seconds = value * scale;
    if !seconds.is_finite() || seconds > 366.0 * 86_400.0 {
        return Err("duration is too long".to_owned());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Formats a duration so that [`parse_duration`] reads it back exactly (`1500ms`, `600s`).
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[FlagSpec] = &[
        FlagSpec::value("model"),
        FlagSpec::value("epochs"),
        FlagSpec::repeated("expect"),
        FlagSpec::switch("background"),
    ];

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_values_switches_and_repeats() {
        let flags = Flags::parse(
            "test",
            SPECS,
            &args(&[
                "--model",
                "m.json",
                "--epochs=5",
                "--expect",
                "a",
                "--expect",
                "b",
                "--background",
            ]),
        )
        .unwrap();
        assert_eq!(flags.get("model"), Some("m.json"));
        assert_eq!(flags.parse_or("epochs", 1u32).unwrap(), 5);
        assert_eq!(flags.all("expect"), vec!["a", "b"]);
        assert!(flags.switch("background"));
        assert_eq!(flags.parse_or("missing", 7u32).unwrap(), 7);
    }

    #[test]
    fn rejects_bad_command_lines() {
        let cases: &[(&[&str], &str)] = &[
            (&["--nope"], "unknown flag --nope"),
            (&["--model"], "--model needs a value"),
            (&["--model", "--epochs", "3"], "--model needs a value"),
            (&["--model", "a", "--model", "b"], "--model given twice"),
            (&["stray"], "unexpected argument 'stray'"),
            (&["--background=yes"], "--background does not take a value"),
        ];
        for (list, expected) in cases {
            let err = Flags::parse("test", SPECS, &args(list)).unwrap_err();
            assert!(
                err.message().contains(expected),
                "{list:?}: {}",
                err.message()
            );
            assert_eq!(err.exit_code(), crate::error::EXIT_USAGE);
        }
    }

    #[test]
    fn bad_values_name_the_flag() {
        let flags = Flags::parse("train", SPECS, &args(&["--epochs", "many"])).unwrap();
        let err = flags.parse_or("epochs", 1u32).unwrap_err();
        assert!(
            err.message()
                .starts_with("iris train: invalid value 'many' for --epochs")
        );
        let err = flags.required("model").unwrap_err();
        assert!(err.message().contains("--model is required"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(format_duration(Duration::from_secs(600)), "600s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
