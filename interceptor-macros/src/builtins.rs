//! The built-in interceptors, one row each. The grammar ([`crate::attr`]),
//! its errors (did-you-mean, a feature that is off) and the code generated
//! ([`crate::expand`]) all read this table; nothing else names a built-in.
//!
//! A row says how `name`, `name = v` and `name(option = v, ..)` are read and
//! what they build:
//! ```text
//! rate(recv = 100, scope = method)
//!   => __icpt::Rate::new(__icpt::RateConfig {
//!          recv: Some(100), scope: __icpt::RateScope::Method,
//!          ..::core::default::Default::default()
//!      })
//! ```
//! An option's name is its field in the config struct; an option not given
//! keeps the field's `Default`. Adding a built-in is a file in the runtime's
//! `builtin/`, a row here and a cargo feature (see CONTRIBUTING.md).

/// One built-in interceptor.
pub(crate) struct Builtin {
    /// As written in the attribute, e.g. `rate`.
    pub(crate) name: &'static str,
    /// The cargo feature of interceptor-runtime that builds it (it turns on
    /// this crate's feature of the same name).
    pub(crate) feature: &'static str,
    /// Whether that feature is on.
    pub(crate) enabled: bool,
    /// The interceptor in `interceptor_runtime::__private`: built with
    /// `Interceptor::new(Config { .. })`.
    pub(crate) interceptor: &'static str,
    /// Its options' struct there; it implements `Default`.
    pub(crate) config: &'static str,
    /// The options of `name(..)`.
    pub(crate) options: &'static [Opt],
    /// Whether `name` alone is allowed (all options at their defaults).
    pub(crate) bare: bool,
    /// What `name = v` means, if allowed.
    pub(crate) shorthand: Option<Shorthand>,
    /// `name(..)` must set at least one of these.
    pub(crate) needs_one_of: &'static [&'static str],
    /// The ways to write it, for the error when the value is missing.
    pub(crate) usage: &'static str,
}

/// `name = v`: sets each of `sets` to `v`.
pub(crate) struct Shorthand {
    pub(crate) sets: &'static [&'static str],
    pub(crate) kind: Kind,
    /// What `v` counts, for errors: "messages per second".
    pub(crate) what: &'static str,
    /// e.g. `rate = 10`.
    pub(crate) example: &'static str,
}

/// One option of `name(..)`.
pub(crate) struct Opt {
    /// The option, and its field in the config struct.
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// What the value counts, for errors: "messages per second".
    pub(crate) what: &'static str,
    /// e.g. `recv = 100`.
    pub(crate) example: &'static str,
    /// The value when it is not given (the config's `Default`).
    pub(crate) default: &'static str,
}

/// How an option's value is read. A literal is checked here, at compile
/// time; any other expression is converted when the interceptor is built
/// (by `__private::int`, `size` or `duration`), and a bad value then ends
/// the call with INTERNAL.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// A whole number, at least 1; the field is an `Option<u64>`.
    Int,
    /// Bytes: a whole number or a string like `"4MiB"`; `Option<u64>`.
    Size,
    /// A string like `"30s"` or a `Duration`, not zero; `Option<Duration>`.
    Duration,
    /// One of a few bare words, each a value in `__private` (e.g.
    /// `RateScope::Method`); the field is that enum. Words only, fixed at
    /// compile time.
    Choice(&'static [(&'static str, &'static str)]),
}

pub(crate) const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "monitor",
        feature: "monitor",
        enabled: cfg!(any(test, feature = "monitor")),
        interceptor: "Monitor",
        config: "MonitorConfig",
        options: &[Opt {
            name: "warn_size",
            kind: Kind::Size,
            what: "bytes",
            example: "warn_size = \"1MiB\"",
            default: "none: no warning",
        }],
        bare: true,
        shorthand: None,
        needs_one_of: &[],
        usage: "`monitor` or `monitor(warn_size = \"1MiB\")`",
    },
    Builtin {
        name: "rate",
        feature: "rate",
        enabled: cfg!(any(test, feature = "rate")),
        interceptor: "Rate",
        config: "RateConfig",
        options: &[
            Opt {
                name: "recv",
                kind: Kind::Int,
                what: "messages per second",
                example: "recv = 100",
                default: "none: no limit",
            },
            Opt {
                name: "send",
                kind: Kind::Int,
                what: "messages per second",
                example: "send = 50",
                default: "none: no limit",
            },
            Opt { name: "burst", kind: Kind::Int, what: "messages", example: "burst = 5", default: "1" },
            Opt {
                name: "scope",
                kind: Kind::Choice(&[("stream", "RateScope::Stream"), ("method", "RateScope::Method")]),
                what: "who shares a limiter",
                example: "scope = method",
                default: "stream",
            },
            Opt {
                name: "on_exceed",
                kind: Kind::Choice(&[("wait", "OnExceed::Wait"), ("reject", "OnExceed::Reject")]),
                what: "what a message over the rate does",
                example: "on_exceed = reject",
                default: "wait",
            },
        ],
        bare: false,
        shorthand: Some(Shorthand {
            sets: &["recv", "send"],
            kind: Kind::Int,
            what: "messages per second",
            example: "rate = 10",
        }),
        needs_one_of: &["recv", "send"],
        usage: "`rate = 10` (messages per second each way) or `rate(recv = 100, send = 50)`",
    },
    Builtin {
        name: "budget",
        feature: "budget",
        enabled: cfg!(any(test, feature = "budget")),
        interceptor: "Budget",
        config: "BudgetConfig",
        options: &[
            Opt {
                name: "messages",
                kind: Kind::Int,
                what: "messages",
                example: "messages = 1000",
                default: "none: no limit",
            },
            Opt { name: "bytes", kind: Kind::Size, what: "bytes", example: "bytes = \"4MiB\"", default: "none" },
            Opt {
                name: "duration",
                kind: Kind::Duration,
                what: "how long a call may run",
                example: "duration = \"30s\"",
                default: "none",
            },
            Opt {
                name: "idle",
                kind: Kind::Duration,
                what: "how long a call may pass no message",
                example: "idle = \"10s\"",
                default: "none",
            },
            Opt {
                name: "streams",
                kind: Kind::Int,
                what: "concurrent streams",
                example: "streams = 64",
                default: "none: no limit",
            },
        ],
        bare: false,
        shorthand: Some(Shorthand {
            sets: &["messages"],
            kind: Kind::Int,
            what: "messages per stream",
            example: "budget = 1000",
        }),
        needs_one_of: &[],
        usage: "`budget = 1000` (messages) or `budget(messages = 1000, bytes = \"4MiB\", duration = \"30s\")`",
    },
    Builtin {
        name: "otel",
        feature: "otel",
        enabled: cfg!(any(test, feature = "otel")),
        interceptor: "Otel",
        config: "OtelConfig",
        options: &[],
        bare: true,
        shorthand: None,
        needs_one_of: &[],
        usage: "`otel` (it takes no options)",
    },
];

/// The row of `name`.
pub(crate) fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

impl Builtin {
    pub(crate) fn option(&self, name: &str) -> Option<&'static Opt> {
        self.options.iter().find(|o| o.name == name)
    }

    pub(crate) fn option_names(&self) -> Vec<&'static str> {
        self.options.iter().map(|o| o.name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name the table uses is one the rest of the macro can rely on.
    #[test]
    fn the_table_is_consistent() {
        for b in BUILTINS {
            assert_eq!(find(b.name).map(|f| f.name), Some(b.name));
            for set in b.shorthand.iter().flat_map(|s| s.sets).chain(b.needs_one_of) {
                assert!(b.option(set).is_some(), "{}: `{set}` is not an option", b.name);
            }
            assert!(b.bare || b.shorthand.is_some() || !b.options.is_empty(), "{} cannot be written", b.name);
            for o in b.options {
                assert!(!o.default.is_empty() && !o.what.is_empty() && o.example.starts_with(o.name));
            }
        }
    }
}
