//! The argument grammar of `#[intercept(..)]`. The built-ins and their
//! options come from [`crate::builtins::BUILTINS`]:
//!
//! ```text
//! args     := item (',' item)* ','?
//! item     := builtin | with | service
//! builtin  := NAME                          // if the row allows it (`monitor`)
//!           | NAME '=' VALUE                // the row's shorthand (`rate = 10`)
//!           | NAME '(' option (',' option)* ')'
//! option   := OPTION '=' VALUE
//! with     := 'with' '=' EXPR               // any expression whose type implements Interceptor
//! service  := 'service' '=' EXPR            // e.g. "routeguide.RouteGuide"
//! VALUE    := a literal, checked here by the option's kind:
//!               INT (at least 1) | SIZE (INT or "4MiB") | DURATION ("30s") | WORD (a choice)
//!           | any other expression (a const, a static, `*LAZY`, `self.limits.chat`),
//!             converted at run time
//!           | KEY: 'peer' | 'metadata' '(' VALUE ')'   // a literal name is checked here
//!           | KEY_FN: a path or a closure, not mentioning `self`
//!           | BACKEND: any expression (`REDIS.clone()`)
//! ```
//!
//! Some options need or exclude others (the row's `rules`): `max_keys`
//! needs `key` or `key_fn`, `key` excludes `scope` ...
//!
//! An expression that mentions `self` is evaluated on every call; any other
//! once per method (see [`crate::expand`]).

use std::time::Duration;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::{
    parenthesized,
    parse::{Parse, ParseStream},
    punctuated::Punctuated,
    spanned::Spanned,
    Error, Expr, Ident, Lit, LitInt, Result, Token, UnOp,
};

use crate::builtins::{self, Builtin, Kind, Opt, BUILTINS};
use quote::quote;

/// Everything one `#[intercept(..)]` says.
#[derive(Clone, Default)]
pub(crate) struct Args {
    pub(crate) items: Vec<Item>,
    pub(crate) service: Option<Expr>,
}

/// One interceptor named in the attribute.
#[derive(Clone)]
pub(crate) enum Item {
    Builtin(Configured),
    With(Expr),
}

impl Item {
    /// The name under which a method's attribute overrides the impl's.
    pub(crate) fn key(&self) -> Option<&'static str> {
        match self {
            Item::Builtin(b) => Some(b.row.name),
            Item::With(_) => None,
        }
    }
}

/// A built-in as written: its row and the options given.
#[derive(Clone)]
pub(crate) struct Configured {
    pub(crate) row: &'static Builtin,
    /// The name as written, for spans.
    pub(crate) name: Ident,
    pub(crate) settings: Vec<Setting>,
}

/// One value given to a built-in, and the fields it sets (`rate = 10` sets
/// `recv` and `send`).
#[derive(Clone)]
pub(crate) struct Setting {
    pub(crate) fields: &'static [&'static str],
    pub(crate) kind: Kind,
    pub(crate) value: Value,
    /// How the option was written, for errors at run time: `rate`,
    /// `budget(bytes)`.
    pub(crate) label: String,
}

#[derive(Clone)]
pub(crate) enum Value {
    /// A checked whole number or size.
    Int(u64),
    Duration(Duration),
    /// The choice's value in `__private`, e.g. `RateScope::Method`.
    Choice(&'static str),
    /// A value built as it is, from `__private` (`__icpt::Key::Peer`,
    /// `__icpt::KeyFn::new(..)`).
    Tokens(TokenStream),
    /// An expression, converted at run time.
    Expr(Expr),
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

/// Every name that may start an item, for "did you mean" and the list of
/// valid ones.
fn keys() -> Vec<&'static str> {
    BUILTINS.iter().map(|b| b.name).chain(["with", "service"]).collect()
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
                _ => match builtins::find(&key) {
                    Some(row) => args.items.push(Item::Builtin(Configured::parse(row, name, input)?)),
                    None => return Err(unknown(&name, &keys(), "interceptor")),
                },
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

/// `unknown interceptor `monitr`; did you mean `monitor`? (valid: ..)`
fn unknown(name: &Ident, known: &[&str], what: &str) -> Error {
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
    Error::new(name.span(), format!("unknown {what} `{given}`{hint} (valid: {})", list(known)))
}

fn list(keys: &[&str]) -> String {
    keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
}

/// `key = value` inside a built-in's parentheses.
struct OptionArg {
    key: Ident,
    value: Expr,
}

impl Parse for OptionArg {
    fn parse(input: ParseStream) -> Result<Self> {
        let key: Ident = input.call(syn::ext::IdentExt::parse_any)?;
        input.parse::<Token![=]>().map_err(|e| Error::new(e.span(), format!("expected `{key} = <value>`")))?;
        Ok(OptionArg { key, value: input.parse()? })
    }
}

impl Configured {
    fn parse(row: &'static Builtin, name: Ident, input: ParseStream) -> Result<Self> {
        let mut configured = Configured { row, name, settings: Vec::new() };
        if let (true, Some(shorthand)) = (input.peek(Token![=]), &row.shorthand) {
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            configured.settings.push(Setting {
                fields: shorthand.sets,
                kind: shorthand.kind,
                value: read(&value, shorthand.kind, shorthand.what, shorthand.example)?,
                label: row.name.to_string(),
            });
        } else if input.peek(syn::token::Paren) && !row.options.is_empty() {
            configured.parse_options(input)?;
        } else if !row.bare {
            return Err(Error::new(configured.name.span(), format!("`{}` needs a value: {}", row.name, row.usage)));
        } else if !input.is_empty() && !input.peek(Token![,]) {
            // `monitor = 3`, `monitor warn_size`: say how to write it.
            return Err(Error::new(input.span(), format!("write {}", row.usage)));
        }
        Ok(configured)
    }

    /// The `(k = v, ..)` of `name(..)`, each key known and given once.
    fn parse_options(&mut self, input: ParseStream) -> Result<()> {
        let row = self.row;
        let content;
        parenthesized!(content in input);
        let given = Punctuated::<OptionArg, Token![,]>::parse_terminated(&content)?;
        if given.is_empty() {
            let options: Vec<String> =
                row.options.iter().map(|o| format!("`{}` (default: {})", o.name, o.default)).collect();
            return Err(Error::new(
                self.name.span(),
                format!("`{}()` has no options; name one of {}", row.name, options.join(", ")),
            ));
        }
        let mut seen: Vec<&Ident> = Vec::new();
        for arg in &given {
            let Some(opt) = row.option(&arg.key.to_string()) else {
                return Err(unknown(&arg.key, &row.option_names(), &format!("`{}` option", row.name)));
            };
            if seen.iter().any(|k| **k == arg.key) {
                return Err(Error::new(arg.key.span(), format!("`{}` is given twice; keep one", arg.key)));
            }
            seen.push(&arg.key);
            self.settings.push(setting(row, opt, &arg.value)?);
        }
        for rule in row.rules {
            let Some(arg) = given.iter().find(|a| a.key == rule.option) else { continue };
            if let Some(other) = given.iter().find(|a| rule.excludes.iter().any(|x| a.key == x)) {
                return Err(Error::new(
                    other.key.span(),
                    format!("`{}` cannot be given with `{}`: {}", other.key, rule.option, rule.why),
                ));
            }
            if !rule.needs.is_empty() && !given.iter().any(|a| rule.needs.iter().any(|n| a.key == n)) {
                let needs: Vec<String> = rule.needs.iter().map(|n| format!("`{n} = ..`")).collect();
                return Err(Error::new(
                    arg.key.span(),
                    format!("`{}` needs {}: {}", rule.option, needs.join(" or "), rule.why),
                ));
            }
        }
        if !row.needs_one_of.is_empty() && !given.iter().any(|a| row.needs_one_of.iter().any(|n| a.key == n)) {
            let shorthand =
                row.shorthand.as_ref().map_or(String::new(), |s| format!("; `{}` sets {}", s.example, list(s.sets)));
            return Err(Error::new(
                self.name.span(),
                format!("`{}(..)` needs {}{shorthand}", row.name, one_of(row.needs_one_of)),
            ));
        }
        Ok(())
    }
}

/// "`recv = N`, `send = N` or both".
fn one_of(names: &[&str]) -> String {
    match names {
        [one] => format!("`{one} = ..`"),
        _ => format!("{} or both", names.iter().map(|n| format!("`{n} = N`")).collect::<Vec<_>>().join(", ")),
    }
}

fn setting(row: &Builtin, opt: &'static Opt, value: &Expr) -> Result<Setting> {
    Ok(Setting {
        fields: std::slice::from_ref(&opt.name),
        kind: opt.kind,
        value: read(value, opt.kind, opt.what, opt.example)?,
        label: format!("{}({})", row.name, opt.name),
    })
}

/// A value of `kind`: a literal is checked now, anything else is left to
/// run time.
fn read(value: &Expr, kind: Kind, what: &str, example: &str) -> Result<Value> {
    match kind {
        Kind::Int => match literal(value) {
            Some(Literal::Lit(Lit::Int(i))) => positive(i, value, what, example).map(Value::Int),
            Some(_) => Err(Error::new(value.span(), format!("expected a whole number of {what}, e.g. `{example}`"))),
            None => Ok(Value::Expr(value.clone())),
        },
        Kind::Size => match literal(value) {
            Some(Literal::Lit(lit)) => size(lit, value).map(Value::Int),
            Some(Literal::Negative) => Err(Error::new(value.span(), "a size cannot be negative")),
            None => Ok(Value::Expr(value.clone())),
        },
        Kind::Duration => match literal(value) {
            Some(Literal::Lit(lit)) => duration(lit, value).map(Value::Duration),
            Some(Literal::Negative) => Err(Error::new(value.span(), "a duration cannot be negative")),
            None => Ok(Value::Expr(value.clone())),
        },
        Kind::Choice(words) => choice(value, words).map(Value::Choice),
        Kind::Key => key(value),
        Kind::KeyFn => {
            if literal(value).is_some() {
                return Err(Error::new(
                    value.span(),
                    format!("expected a function, e.g. `{example}` with `fn tenant_of(call: &CallContext, metadata: &MetadataMap) -> Option<String>`"),
                ));
            }
            if mentions_self(value) {
                return Err(Error::new(
                    value.span(),
                    "a key function is made once per method, so it cannot use `self`; write a function of the call \
                     and its metadata, e.g. `key_fn = tenant_of`",
                ));
            }
            let name = value.to_token_stream().to_string();
            Ok(Value::Tokens(quote!(__icpt::KeyFn::new(#name, #value))))
        }
        Kind::Backend => match literal(value) {
            Some(_) => Err(Error::new(value.span(), format!("expected a limiter backend, e.g. `{example}`"))),
            None => Ok(Value::Expr(value.clone())),
        },
    }
}

/// `peer` or `metadata("x-api-key")` (a literal name checked now, another
/// expression at run time).
fn key(value: &Expr) -> Result<Value> {
    const HOW: &str = "expected `key = peer` (the client's IP address) or `key = metadata(\"x-api-key\")`; for a \
                       function of your own, write `key_fn = path`";
    match value {
        Expr::Path(p) if p.path.is_ident("peer") => Ok(Value::Tokens(quote!(__icpt::Key::Peer))),
        Expr::Call(call) => {
            let Expr::Path(f) = &*call.func else { return Err(Error::new(value.span(), HOW)) };
            if !f.path.is_ident("metadata") || call.args.len() != 1 {
                return Err(Error::new(value.span(), HOW));
            }
            let name = &call.args[0];
            if let Some(Literal::Lit(lit)) = literal(name) {
                let Lit::Str(s) = lit else {
                    return Err(Error::new(name.span(), "expected the metadata key as a string, e.g. \"x-api-key\""));
                };
                if let Some(why) = bad_metadata_key(&s.value()) {
                    return Err(Error::new(s.span(), why));
                }
                // Checked: built as it is, with no conversion at run time.
                return Ok(Value::Tokens(quote!(__icpt::Key::checked_metadata(#s))));
            }
            Ok(Value::Expr(name.clone()))
        }
        Expr::Group(g) => key(&g.expr),
        _ => Err(Error::new(value.span(), HOW)),
    }
}

/// Why `name` cannot be a metadata key a limit is kept per (the runtime's
/// `key::bad_metadata_key` says the same at run time).
fn bad_metadata_key(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a metadata key cannot be empty; write e.g. \"x-api-key\"".into());
    }
    if let Some(c) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.')) {
        let hint = if c.is_ascii_uppercase() {
            format!("; metadata keys are lowercase: write \"{}\"", name.to_ascii_lowercase())
        } else {
            String::new()
        };
        return Some(format!("`{name}` is not a metadata key: `{c}` is not allowed (a-z, 0-9, `-`, `_`, `.`){hint}"));
    }
    if name.ends_with("-bin") {
        return Some(format!("`{name}` is binary metadata; a limit's key must be ASCII metadata"));
    }
    None
}

enum Literal<'a> {
    Lit(&'a Lit),
    /// `-1`
    Negative,
}

fn literal(value: &Expr) -> Option<Literal<'_>> {
    match value {
        Expr::Lit(l) => Some(Literal::Lit(&l.lit)),
        Expr::Group(g) => literal(&g.expr),
        Expr::Paren(p) => literal(&p.expr),
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) && literal(&u.expr).is_some() => Some(Literal::Negative),
        _ => None,
    }
}

/// A whole number, at least 1.
fn positive(int: &LitInt, value: &Expr, what: &str, example: &str) -> Result<u64> {
    let n = int.base10_parse::<u64>()?;
    if n == 0 {
        return Err(Error::new(
            value.span(),
            format!("0 would stop every call; expected at least 1 ({what}, e.g. `{example}`)"),
        ));
    }
    Ok(n)
}

/// `4096` or `"4MiB"`.
fn size(lit: &Lit, value: &Expr) -> Result<u64> {
    match lit {
        Lit::Int(i) => i.base10_parse::<u64>(),
        Lit::Str(s) => parse_size::parse_size(s.value()).map_err(|e| {
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
fn duration(lit: &Lit, value: &Expr) -> Result<Duration> {
    let parsed = match lit {
        Lit::Str(s) => humantime::parse_duration(&s.value()).map_err(|e| {
            Error::new(
                s.span(),
                format!("`{}` is not a duration ({e}); write it like \"30s\", \"1m 30s\" or \"250ms\"", s.value()),
            )
        })?,
        Lit::Int(i) => {
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

/// One of a few bare words; the value it stands for.
fn choice(value: &Expr, words: &[(&'static str, &'static str)]) -> Result<&'static str> {
    let names: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
    if let Expr::Path(p) = value {
        if let Some(ident) = p.path.get_ident() {
            return match words.iter().find(|(w, _)| ident == w) {
                Some((_, path)) => Ok(path),
                None => Err(unknown(ident, &names, "value")),
            };
        }
    }
    Err(Error::new(value.span(), format!("expected one of {} (a bare word, fixed at compile time)", list(&names))))
}

/// Whether an expression mentions `self`: such a value is evaluated on
/// every call, as it may differ between instances of the service.
pub(crate) fn mentions_self(expr: &Expr) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            TokenTree::Ident(i) => i == "self",
            TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(expr.to_token_stream())
}

/// An integer literal for the expansion, unsuffixed.
pub(crate) fn int(n: u64) -> LitInt {
    LitInt::new(&n.to_string(), Span::call_site())
}
