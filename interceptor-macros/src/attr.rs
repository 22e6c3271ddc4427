//! The argument grammar of `#[intercept(..)]`, one `Parse` per rule:
//!
//! ```text
//! args     := item (',' item)* ','?
//! item     := monitor | rate | budget | with | service
//! monitor  := 'monitor' ( '(' 'warn_size' '=' SIZE ')' )?
//! rate     := 'rate' '=' INT
//!           | 'rate' '(' rate_opt (',' rate_opt)* ')'
//! rate_opt := ('recv' | 'send' | 'burst') '=' INT
//!           | 'scope' '=' ('stream' | 'method')
//!           | 'on_exceed' '=' ('wait' | 'reject')
//! budget   := 'budget' '=' INT
//!           | 'budget' '(' budget_opt (',' budget_opt)* ')'
//! budget_opt := ('messages' | 'streams') '=' INT | 'bytes' '=' SIZE
//!           | ('duration' | 'idle') '=' DURATION
//! with     := 'with' '=' EXPR            // any expression whose type implements Interceptor
//! service  := 'service' '=' (STRING | PATH)   // e.g. "routeguide.RouteGuide"
//! SIZE     := INT | STRING like "4MiB", "512 KB"
//! DURATION := STRING like "30s", "1m 30s", "250ms"
//! ```

use std::time::Duration;

use proc_macro2::Span;
use syn::{
    parenthesized,
    parse::{Parse, ParseStream},
    punctuated::Punctuated,
    spanned::Spanned,
    Error, Expr, Ident, Lit, LitInt, Result, Token,
};

/// The interceptors the attribute knows, for messages and "did you mean".
pub(crate) const INTERCEPTORS: &[&str] = &["monitor", "rate", "budget", "with"];
const KEYS: &[&str] = &["monitor", "rate", "budget", "with", "service"];

/// Everything one `#[intercept(..)]` says.
#[derive(Clone, Default)]
pub(crate) struct Args {
    pub(crate) items: Vec<Item>,
    pub(crate) service: Option<Expr>,
}

/// One interceptor named in the attribute.
#[derive(Clone)]
pub(crate) enum Item {
    Monitor(Monitor),
    Rate(Rate),
    Budget(Budget),
    With(Expr),
}

impl Item {
    /// The name under which a method's attribute overrides the impl's.
    pub(crate) fn key(&self) -> Option<&'static str> {
        match self {
            Item::Monitor(_) => Some("monitor"),
            Item::Rate(_) => Some("rate"),
            Item::Budget(_) => Some("budget"),
            Item::With(_) => None,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Monitor {
    pub(crate) name: Ident,
    pub(crate) warn_size: Option<u64>,
}

#[derive(Clone)]
pub(crate) struct Rate {
    pub(crate) name: Ident,
    pub(crate) recv: Option<u64>,
    pub(crate) send: Option<u64>,
    pub(crate) burst: Option<u64>,
    pub(crate) per_method: bool,
    pub(crate) reject: bool,
}

#[derive(Clone)]
pub(crate) struct Budget {
    pub(crate) name: Ident,
    pub(crate) messages: Option<u64>,
    pub(crate) bytes: Option<u64>,
    pub(crate) duration: Option<Duration>,
    pub(crate) idle: Option<Duration>,
    pub(crate) streams: Option<u64>,
}

impl Args {
    /// Adds a method's attribute to the impl's: an interceptor named in both
    /// takes the method's options, in the impl's place; the rest is appended.
    pub(crate) fn merge(mut self, method: Args) -> Args {
        for item in method.items {
            match item.key().and_then(|k| self.items.iter().position(|i| i.key() == Some(k))) {
                Some(at) => self.items[at] = item,
                None => self.items.push(item),
            }
        }
        if method.service.is_some() {
            self.service = method.service;
        }
        self
    }
}

impl Parse for Args {
    fn parse(input: ParseStream) -> Result<Self> {
        let mut args = Args::default();
        let mut seen: Vec<Ident> = Vec::new();
        while !input.is_empty() {
            let name: Ident = input.call(syn::ext::IdentExt::parse_any)?;
            let key = name.to_string();
            if key != "with" {
                if let Some(first) = seen.iter().find(|s| **s == name) {
                    let mut err = Error::new(name.span(), format!("`{key}` is given twice; keep one"));
                    err.combine(Error::new(first.span(), format!("`{key}` first given here")));
                    return Err(err);
                }
                seen.push(name.clone());
            }
            match key.as_str() {
                "monitor" => args.items.push(Item::Monitor(Monitor::parse(name, input)?)),
                "rate" => args.items.push(Item::Rate(Rate::parse(name, input)?)),
                "budget" => args.items.push(Item::Budget(Budget::parse(name, input)?)),
                "with" => {
                    input.parse::<Token![=]>().map_err(|e| {
                        Error::new(e.span(), "write `with = <expression>`, e.g. `with = AuthCheck::new(\"secret\")`")
                    })?;
                    args.items.push(Item::With(input.parse()?));
                }
                "service" => {
                    input
                        .parse::<Token![=]>()
                        .map_err(|e| Error::new(e.span(), "write `service = \"package.Service\"`"))?;
                    args.service = Some(input.parse()?);
                }
                _ => return Err(unknown(&name, KEYS, "interceptor", INTERCEPTORS)),
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

/// `unknown interceptor `monitr`; did you mean `monitor`? ...`
fn unknown(name: &Ident, known: &[&str], what: &str, listed: &[&str]) -> Error {
    let given = name.to_string();
    let best = known
        .iter()
        .map(|k| (strsim::jaro_winkler(&given, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let hint = match best {
        Some((_, k)) => format!("; did you mean `{k}`?"),
        None => String::new(),
    };
    let valid = listed.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
    Error::new(name.span(), format!("unknown {what} `{given}`{hint} (valid: {valid})"))
}

/// `key = value` inside an interceptor's parentheses.
struct Opt {
    key: Ident,
    value: Expr,
}

impl Parse for Opt {
    fn parse(input: ParseStream) -> Result<Self> {
        let key: Ident = input.call(syn::ext::IdentExt::parse_any)?;
        input.parse::<Token![=]>().map_err(|e| Error::new(e.span(), format!("expected `{key} = <value>`")))?;
        Ok(Opt { key, value: input.parse()? })
    }
}

/// The `(k = v, ..)` of `name(..)`, checked against the known keys; each key
/// at most once.
fn options(name: &Ident, input: ParseStream, known: &[&str]) -> Result<Vec<Opt>> {
    let content;
    parenthesized!(content in input);
    let opts = Punctuated::<Opt, Token![,]>::parse_terminated(&content)?;
    let mut seen: Vec<&Ident> = Vec::new();
    for opt in &opts {
        if !known.contains(&opt.key.to_string().as_str()) {
            return Err(unknown(&opt.key, known, &format!("`{name}` option"), known));
        }
        if seen.iter().any(|k| **k == opt.key) {
            return Err(Error::new(opt.key.span(), format!("`{}` is given twice; keep one", opt.key)));
        }
        seen.push(&opt.key);
    }
    if opts.is_empty() {
        return Err(Error::new(name.span(), format!("`{name}()` has no options; name one of {}", list(known))));
    }
    Ok(opts.into_iter().collect())
}

fn list(keys: &[&str]) -> String {
    keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
}

impl Monitor {
    fn parse(name: Ident, input: ParseStream) -> Result<Self> {
        let mut monitor = Monitor { name, warn_size: None };
        if input.peek(syn::token::Paren) {
            for opt in options(&monitor.name, input, &["warn_size"])? {
                monitor.warn_size = Some(size(&opt.value)?);
            }
        }
        Ok(monitor)
    }
}

impl Rate {
    fn parse(name: Ident, input: ParseStream) -> Result<Self> {
        let mut rate = Rate { name, recv: None, send: None, burst: None, per_method: false, reject: false };
        if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            let n = positive(&value, "messages per second, e.g. `rate = 10`")?;
            rate.recv = Some(n);
            rate.send = Some(n);
        } else if input.peek(syn::token::Paren) {
            let known = ["recv", "send", "burst", "scope", "on_exceed"];
            for opt in options(&rate.name, input, &known)? {
                match opt.key.to_string().as_str() {
                    "recv" => rate.recv = Some(positive(&opt.value, "messages per second, e.g. `recv = 100`")?),
                    "send" => rate.send = Some(positive(&opt.value, "messages per second, e.g. `send = 50`")?),
                    "burst" => rate.burst = Some(positive(&opt.value, "messages, e.g. `burst = 5`")?),
                    "scope" => rate.per_method = choice(&opt.value, &["stream", "method"])? == "method",
                    _ => rate.reject = choice(&opt.value, &["wait", "reject"])? == "reject",
                }
            }
            if rate.recv.is_none() && rate.send.is_none() {
                return Err(Error::new(
                    rate.name.span(),
                    "`rate(..)` needs `recv = N`, `send = N` or both; `rate = N` limits both directions",
                ));
            }
        } else {
            return Err(Error::new(
                rate.name.span(),
                "`rate` needs a value: `rate = 10` (messages per second each way) or `rate(recv = 100, send = 50)`",
            ));
        }
        Ok(rate)
    }
}

impl Budget {
    fn parse(name: Ident, input: ParseStream) -> Result<Self> {
        let mut budget = Budget { name, messages: None, bytes: None, duration: None, idle: None, streams: None };
        if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            budget.messages = Some(positive(&value, "messages per stream, e.g. `budget = 1000`")?);
        } else if input.peek(syn::token::Paren) {
            let known = ["messages", "bytes", "duration", "idle", "streams"];
            for opt in options(&budget.name, input, &known)? {
                match opt.key.to_string().as_str() {
                    "messages" => budget.messages = Some(positive(&opt.value, "messages, e.g. `messages = 1000`")?),
                    "bytes" => budget.bytes = Some(size(&opt.value)?),
                    "duration" => budget.duration = Some(duration(&opt.value)?),
                    "idle" => budget.idle = Some(duration(&opt.value)?),
                    _ => budget.streams = Some(positive(&opt.value, "concurrent streams, e.g. `streams = 64`")?),
                }
            }
        } else {
            return Err(Error::new(
                budget.name.span(),
                "`budget` needs a value: `budget = 1000` (messages) or `budget(messages = 1000, bytes = \"4MiB\", duration = \"30s\")`",
            ));
        }
        Ok(budget)
    }
}

fn lit(value: &Expr) -> Option<&Lit> {
    match value {
        Expr::Lit(l) => Some(&l.lit),
        Expr::Group(g) => lit(&g.expr),
        _ => None,
    }
}

/// A positive integer literal.
fn positive(value: &Expr, what: &str) -> Result<u64> {
    let n = match lit(value) {
        Some(Lit::Int(i)) => i.base10_parse::<u64>()?,
        _ => return Err(Error::new(value.span(), format!("expected a whole number of {what}"))),
    };
    if n == 0 {
        return Err(Error::new(value.span(), format!("0 would stop every call; expected at least 1 ({what})")));
    }
    Ok(n)
}

/// `4096` or `"4MiB"`.
fn size(value: &Expr) -> Result<u64> {
    match lit(value) {
        Some(Lit::Int(i)) => i.base10_parse::<u64>(),
        Some(Lit::Str(s)) => parse_size::parse_size(s.value()).map_err(|e| {
            // parse_size's own words ("invalid digit found in string") do not
            // say what a size looks like.
            let why = match e {
                parse_size::Error::PosOverflow => "too large; at most 16 EiB",
                _ => "a number and a unit: B, KB, KiB, MB, MiB, GB, GiB, ...",
            };
            Error::new(
                s.span(),
                format!("`{}` is not a size ({why}); write bytes like \"4MiB\", \"512 KB\" or 4096", s.value()),
            )
        }),
        _ => Err(Error::new(value.span(), "expected a size, like \"4MiB\", \"512 KB\" or 4096 (bytes)")),
    }
}

/// `"30s"`, `"1m 30s"`, `"250ms"`.
fn duration(value: &Expr) -> Result<Duration> {
    let parsed = match lit(value) {
        Some(Lit::Str(s)) => humantime::parse_duration(&s.value()).map_err(|e| {
            Error::new(
                s.span(),
                format!("`{}` is not a duration ({e}); write it like \"30s\", \"1m 30s\" or \"250ms\"", s.value()),
            )
        })?,
        Some(Lit::Int(i)) => {
            return Err(Error::new(
                i.span(),
                format!("a duration needs a unit: write \"{}s\" for seconds", i.base10_digits()),
            ))
        }
        _ => return Err(Error::new(value.span(), "expected a duration, like \"30s\", \"1m 30s\" or \"250ms\"")),
    };
    if parsed.is_zero() {
        return Err(Error::new(value.span(), "a zero duration would end every stream at once"));
    }
    Ok(parsed)
}

/// One of a few bare words.
fn choice(value: &Expr, words: &[&'static str]) -> Result<&'static str> {
    if let Expr::Path(p) = value {
        if let Some(ident) = p.path.get_ident() {
            return match words.iter().find(|w| ident == *w) {
                Some(w) => Ok(w),
                None => Err(unknown(ident, words, "value", words)),
            };
        }
    }
    Err(Error::new(value.span(), format!("expected one of {}", list(words))))
}

/// An integer literal for the expansion, unsuffixed.
pub(crate) fn int(n: u64) -> LitInt {
    LitInt::new(&n.to_string(), Span::call_site())
}
