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
    /// Options that need or exclude others.
    pub(crate) rules: &'static [Rule],
    /// Runs before every interceptor without this mark, wherever it is
    /// written (`otel`: its span must cover the others' rejections).
    pub(crate) runs_first: bool,
}

/// An option given with `name(..)` needs one of `needs` (if any), and none
/// of `excludes`.
pub(crate) struct Rule {
    pub(crate) option: &'static str,
    pub(crate) needs: &'static [&'static str],
    pub(crate) excludes: &'static [&'static str],
    /// Why, for the error.
    pub(crate) why: &'static str,
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
    /// A limit's key: `peer` or `metadata("x-api-key")` (a literal name is
    /// checked here); `Option<Key>`.
    Key,
    /// A key function: a path or a closure, `Fn(&CallContext, &MetadataMap)
    /// -> Option<String>`, evaluated once per method (so it may not mention
    /// `self`); `Option<KeyFn>`.
    KeyFn,
    /// A limiter backend: any expression whose type implements `IntoBackend`
    /// (`REDIS.clone()`); `Option<Backend>`.
    Backend,
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
        rules: &[],
        runs_first: false,
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
            KEY,
            KEY_FN,
            MAX_KEYS,
            ON_MISSING_KEY,
            Opt {
                name: "backend",
                kind: Kind::Backend,
                what: "a limiter backend shared by servers",
                example: "backend = REDIS.clone()",
                default: "none: limits kept in this process",
            },
            Opt {
                name: "on_backend_error",
                kind: Kind::Choice(&[("allow", "OnBackendError::Allow"), ("reject", "OnBackendError::Reject")]),
                what: "what a stream does while the backend fails",
                example: "on_backend_error = reject",
                default: "allow",
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
        rules: &[
            Rule { option: "key", needs: &[], excludes: &["key_fn"], why: "both say what a call's key is; keep one" },
            Rule {
                option: "key",
                needs: &[],
                excludes: &["scope"],
                why: "`key` keeps one limit per key, shared by the method's streams with that key; remove `scope`",
            },
            Rule {
                option: "key_fn",
                needs: &[],
                excludes: &["scope"],
                why: "`key_fn` keeps one limit per key, shared by the method's streams with that key; remove `scope`",
            },
            Rule {
                option: "backend",
                needs: &[],
                excludes: &["scope"],
                why: "a backend keeps one limit for the method's streams on every server (one per key with `key`); \
                      remove `scope`",
            },
            MAX_KEYS_NEEDS_A_KEY,
            ON_MISSING_KEY_NEEDS_A_KEY,
            Rule {
                option: "on_backend_error",
                needs: &["backend"],
                excludes: &[],
                why: "it says what a stream does while the backend fails",
            },
        ],
        runs_first: false,
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
            KEY,
            KEY_FN,
            MAX_KEYS,
            ON_MISSING_KEY,
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
        rules: &[
            Rule { option: "key", needs: &[], excludes: &["key_fn"], why: "both say what a call's key is; keep one" },
            Rule { option: "key", needs: &["streams"], excludes: &[], why: "`key` counts the `streams` limit per key" },
            Rule {
                option: "key_fn",
                needs: &["streams"],
                excludes: &[],
                why: "`key_fn` counts the `streams` limit per key",
            },
            MAX_KEYS_NEEDS_A_KEY,
            ON_MISSING_KEY_NEEDS_A_KEY,
        ],
        runs_first: false,
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
        rules: &[],
        runs_first: true,
    },
];

/// The rules of `max_keys` and `on_missing_key`, options of `rate` and
/// `budget` alike.
const MAX_KEYS_NEEDS_A_KEY: Rule =
    Rule { option: "max_keys", needs: &["key", "key_fn"], excludes: &[], why: "it bounds the keys held" };
const ON_MISSING_KEY_NEEDS_A_KEY: Rule = Rule {
    option: "on_missing_key",
    needs: &["key", "key_fn"],
    excludes: &[],
    why: "it says what a call without the key gets",
};

/// `key = ..`, an option of `rate` and `budget`.
const KEY: Opt = Opt {
    name: "key",
    kind: Kind::Key,
    what: "the key a limit is kept per",
    example: "key = metadata(\"x-api-key\")",
    default: "none: one limit",
};

const KEY_FN: Opt = Opt {
    name: "key_fn",
    kind: Kind::KeyFn,
    what: "a function of the call and its metadata returning its key",
    example: "key_fn = tenant_of",
    default: "none",
};

const MAX_KEYS: Opt = Opt {
    name: "max_keys",
    kind: Kind::Int,
    what: "keys held at once",
    example: "max_keys = 10000",
    default: "100000",
};

const ON_MISSING_KEY: Opt = Opt {
    name: "on_missing_key",
    kind: Kind::Choice(&[
        ("invalid_argument", "MissingKey::InvalidArgument"),
        ("unauthenticated", "MissingKey::Unauthenticated"),
        ("permission_denied", "MissingKey::PermissionDenied"),
        ("failed_precondition", "MissingKey::FailedPrecondition"),
        ("share", "MissingKey::Share"),
    ]),
    what: "what a call without the key gets",
    example: "on_missing_key = unauthenticated",
    default: "invalid_argument",
};

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
            for rule in b.rules {
                for name in std::iter::once(&rule.option).chain(rule.needs).chain(rule.excludes) {
                    assert!(b.option(name).is_some(), "{}: rule names `{name}`, not an option", b.name);
                }
            }
        }
    }
}
