//! Interceptor options written as expressions (`rate = LIMIT`,
//! `budget(duration = *TIMEOUT)`, `rate = self.limits.chat`), converted when
//! the interceptor is built, and the methods of a handler built from them.
//!
//! A literal option is checked by the macro at compile time. Any other
//! expression is converted here ([`int`], [`size`], [`duration`]): a bad value
//! (zero, negative, a string that is not a size or a duration) is a
//! [`BadOption`], which ends the call with INTERNAL and is logged at ERROR
//! once per method, never a panic.
//!
//! An expression that does not mention `self` is evaluated once per method,
//! on its first call. One that does is evaluated on every call, and the
//! method's interceptors are looked up in [`Methods`] by the values: calls
//! with equal values share one set of interceptors, and with it their
//! method-wide state (a `scope = method` limiter, `streams` slots, the
//! monitor's totals), so two instances of a service configured differently
//! each get their own.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, OnceLock,
    },
    time::Duration,
};

use tonic::{Request, Status};

use super::Names;
use crate::{
    engine::{Method, MethodInfo},
    interceptor::Interceptor,
};

/// An option whose value, computed at run time, cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadOption {
    /// As written: `rate`, `budget(bytes)`.
    option: &'static str,
    why: String,
}

impl BadOption {
    fn new(option: &'static str, why: impl Into<String>) -> Self {
        BadOption { option, why: why.into() }
    }

    fn status(&self, method: &str) -> Status {
        Status::internal(format!("{method}: {self}"))
    }
}

impl fmt::Display for BadOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the `#[intercept]` option `{}` is invalid: {}", self.option, self.why)
    }
}

/// A value for an option that counts something (`rate`, `messages`, ...).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a whole number",
    label = "this option takes a whole number: a value of an integer type, or a reference to one",
    note = "for a `LazyLock<u64>` or another smart pointer, write `*VALUE`"
)]
pub trait WholeNumber {
    /// The value, or why it is not one.
    fn whole(self) -> Result<u64, String>;
}

macro_rules! whole_numbers {
    ($($t:ty),*) => {$(
        impl WholeNumber for $t {
            #[inline]
            #[allow(unused_comparisons)]
            fn whole(self) -> Result<u64, String> {
                if self < 0 {
                    return Err(format!("{self} is negative"));
                }
                u64::try_from(self).map_err(|_| format!("{self} is too large"))
            }
        }
    )*};
}
whole_numbers!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

impl<T: WholeNumber + Copy> WholeNumber for &T {
    #[inline]
    fn whole(self) -> Result<u64, String> {
        (*self).whole()
    }
}

/// A value for a size option (`bytes`, `warn_size`): bytes, or a string
/// like `"4MiB"`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a size",
    label = "this option takes bytes: a whole number, or a string like \"4MiB\""
)]
pub trait SizeValue {
    /// The bytes, or why it is not a size.
    fn in_bytes(self) -> Result<u64, String>;
}

impl<T: WholeNumber> SizeValue for T {
    #[inline]
    fn in_bytes(self) -> Result<u64, String> {
        self.whole()
    }
}

impl SizeValue for &str {
    fn in_bytes(self) -> Result<u64, String> {
        parse_size::parse_size(self)
            .map_err(|_| format!("`{self}` is not a size; write bytes like \"4MiB\", \"512 KB\" or 4096"))
    }
}

impl SizeValue for String {
    fn in_bytes(self) -> Result<u64, String> {
        self.as_str().in_bytes()
    }
}

impl SizeValue for &String {
    fn in_bytes(self) -> Result<u64, String> {
        self.as_str().in_bytes()
    }
}

/// A value for a duration option (`duration`, `idle`): a `Duration`, or a
/// string like `"30s"`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a duration",
    label = "this option takes a `std::time::Duration`, or a string like \"30s\" or \"1m 30s\""
)]
pub trait DurationValue {
    /// The duration, or why it is not one.
    fn duration(self) -> Result<Duration, String>;
}

impl DurationValue for Duration {
    #[inline]
    fn duration(self) -> Result<Duration, String> {
        Ok(self)
    }
}

impl DurationValue for &Duration {
    #[inline]
    fn duration(self) -> Result<Duration, String> {
        Ok(*self)
    }
}

impl DurationValue for &str {
    fn duration(self) -> Result<Duration, String> {
        humantime::parse_duration(self)
            .map_err(|e| format!("`{self}` is not a duration ({e}); write it like \"30s\", \"1m 30s\" or \"250ms\""))
    }
}

impl DurationValue for String {
    fn duration(self) -> Result<Duration, String> {
        self.as_str().duration()
    }
}

impl DurationValue for &String {
    fn duration(self) -> Result<Duration, String> {
        self.as_str().duration()
    }
}

/// A whole number option's value: at least 1.
#[inline]
pub fn int(option: &'static str, value: impl WholeNumber) -> Result<u64, BadOption> {
    match value.whole() {
        Ok(0) => Err(BadOption::new(option, "0 would stop every call; expected at least 1")),
        Ok(n) => Ok(n),
        Err(why) => Err(BadOption::new(option, format!("{why}; expected at least 1"))),
    }
}

/// A size option's value, in bytes.
#[inline]
pub fn size(option: &'static str, value: impl SizeValue) -> Result<u64, BadOption> {
    value.in_bytes().map_err(|why| BadOption::new(option, why))
}

/// A duration option's value: not zero.
#[inline]
pub fn duration(option: &'static str, value: impl DurationValue) -> Result<Duration, BadOption> {
    match value.duration() {
        Ok(d) if d.is_zero() => Err(BadOption::new(option, "a zero duration would end every stream at once")),
        Ok(d) => Ok(d),
        Err(why) => Err(BadOption::new(option, why)),
    }
}

/// `key = metadata(name)`'s name: a metadata key a limit may be kept per.
#[cfg(any(feature = "rate", feature = "budget"))]
pub fn metadata_key(option: &'static str, name: impl AsRef<str>) -> Result<crate::key::Key, BadOption> {
    crate::key::Key::metadata(name.as_ref()).map_err(|why| BadOption::new(option, why))
}

/// `backend = ..`'s value.
#[cfg(feature = "rate")]
#[inline]
pub fn backend(option: &'static str, value: impl crate::rate::IntoBackend) -> Result<crate::rate::Backend, BadOption> {
    let _ = option;
    Ok(value.into_backend())
}

/// A `with = ..` value evaluated on every call (it mentions `self`): the
/// calls whose values are equal share one interceptor.
#[diagnostic::on_unimplemented(
    message = "`with = ..` mentions `self`, so it is evaluated on every call, and calls with equal values \
               share one interceptor: `{Self}` must be an interceptor that implements `PartialEq` and `Clone`",
    label = "evaluated on every call",
    note = "derive `PartialEq` and `Clone` for it, or build it without `self` (then once per method)"
)]
pub trait PerCallInterceptor: PartialEq + Clone + Send + Sync + 'static {}

impl<I: Interceptor + PartialEq + Clone> PerCallInterceptor for I {}

/// `with = expr` where `expr` mentions `self`.
#[inline]
pub fn with_per_call<W: PerCallInterceptor>(interceptor: W) -> W {
    interceptor
}

/// At most this many distinct values of a method's per-call options: they
/// are meant to differ by service instance, not by call.
pub const MAX_PER_METHOD: usize = 64;

/// Where a handler whose options are expressions keeps its methods: one per
/// distinct value of the options that are evaluated on every call (a
/// single one when none is). One `static` per intercepted handler.
///
/// The lookup is lock-free: a list that only grows, owned by the `static`
/// (so `'static`, like every method's interceptors), each link a
/// `OnceLock`; a call compares its values with each entry's in turn.
pub struct Methods {
    cache: OnceLock<Box<dyn Any + Send + Sync>>,
    /// The method's `/package.Service/Method`, once an entry has been built.
    full_name: OnceLock<&'static str>,
    /// A bad value was logged for this method.
    reported: AtomicBool,
}

struct Cache<K, I> {
    first: Link<K, I>,
}

type Link<K, I> = OnceLock<Box<Entry<K, I>>>;

struct Entry<K, I> {
    key: K,
    method: Result<Method<I>, Status>,
    next: Link<K, I>,
}

impl<K, I> Entry<K, I> {
    fn method(&'static self) -> Result<&'static Method<I>, Status> {
        self.method.as_ref().map_err(Clone::clone)
    }
}

impl Methods {
    #[allow(clippy::new_without_default)]
    /// An empty cache, for a `static`.
    pub const fn new() -> Self {
        Methods { cache: OnceLock::new(), full_name: OnceLock::new(), reported: AtomicBool::new(false) }
    }

    /// The method's interceptors for the values `key`: those of an earlier
    /// call with equal values, or built now by `build` (whose own bad value
    /// is kept, so that every call with these values ends the same way).
    pub fn get<K, I>(
        &'static self,
        key: K,
        info: impl FnOnce() -> MethodInfo,
        build: impl FnOnce(&K) -> Result<I, BadOption>,
    ) -> Result<&'static Method<I>, Status>
    where
        K: PartialEq + Send + Sync + 'static,
        I: Interceptor,
    {
        let mut link = &self.cache::<K, I>().first;
        let mut seen = 0;
        while let Some(entry) = link.get() {
            if entry.key == key {
                return entry.method();
            }
            link = &entry.next;
            seen += 1;
        }
        // Past the bound, no description is built (its names are leaked):
        // the call ends with the earlier entries' name.
        if seen >= MAX_PER_METHOD {
            return Err(self.too_many());
        }
        let info = info();
        self.full_name.get_or_init(|| info.full_name);
        let method = match build(&key) {
            Ok(interceptors) => Ok(Method::new(info, interceptors)),
            Err(bad) => Err(self.report(info.full_name, &bad)),
        };
        // Appended at the end; a call that appended first wins, and if its
        // values are these, this one's entry is dropped for it.
        let mut ours = Box::new(Entry { key, method, next: OnceLock::new() });
        loop {
            match link.set(ours) {
                Ok(()) => break,
                Err(back) => ours = back,
            }
            let Some(other) = link.get() else { continue };
            if other.key == ours.key {
                return other.method();
            }
            link = &other.next;
        }
        match link.get() {
            Some(entry) => entry.method(),
            None => Err(Status::internal("interceptor-runtime: a method just added is gone")),
        }
    }

    /// A value evaluated for this call (of `request`, named by `names`) is
    /// bad: the call ends with this status.
    #[cold]
    pub fn bad<T>(&'static self, names: Names<'_>, request: &Request<T>, bad: BadOption) -> Status {
        self.report(&names.full_name(request), &bad)
    }

    /// Logs the first bad value of the method at ERROR (later ones at DEBUG,
    /// so that a misconfigured method does not log on every call).
    #[cold]
    fn report(&self, method: &str, bad: &BadOption) -> Status {
        if self.reported.swap(true, Ordering::Relaxed) {
            tracing::debug!(method, option = bad.option, "{bad}");
        } else {
            tracing::error!(method, option = bad.option, "{bad}; every call with this value ends with INTERNAL");
        }
        bad.status(method)
    }

    #[cold]
    fn too_many(&self) -> Status {
        let why = format!(
            "more than {MAX_PER_METHOD} distinct values of the options that mention `self`, which are evaluated \
             on every call: they should be fixed per service instance"
        );
        self.report(self.full_name.get().copied().unwrap_or("(this method)"), &BadOption::new("self", why))
    }

    /// The cache of this `(K, I)`.
    fn cache<K, I>(&'static self) -> &'static Cache<K, I>
    where
        K: PartialEq + Send + Sync + 'static,
        I: Interceptor,
    {
        let cache = self.cache.get_or_init(|| Box::new(Cache::<K, I> { first: OnceLock::new() }));
        match cache.downcast_ref::<Cache<K, I>>() {
            Some(cache) => cache,
            None => self.cache_by_type(),
        }
    }

    /// A handler in a generic impl whose key or interceptors' type depends on
    /// the impl's parameters: one static serves several types.
    #[cold]
    fn cache_by_type<K, I>(&'static self) -> &'static Cache<K, I>
    where
        K: PartialEq + Send + Sync + 'static,
        I: Interceptor,
    {
        type Key = (usize, TypeId);
        static BY_TYPE: OnceLock<Mutex<HashMap<Key, &'static (dyn Any + Send + Sync)>>> = OnceLock::new();
        let key = (self as *const Methods as usize, TypeId::of::<Cache<K, I>>());
        let mut map = BY_TYPE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        let cache = *map.entry(key).or_insert_with(|| Box::leak(Box::new(Cache::<K, I> { first: OnceLock::new() })));
        cache.downcast_ref().expect("keyed by the type it holds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RpcKind;

    #[test]
    fn values_are_converted_or_explained() {
        assert_eq!(int("rate", 10u32), Ok(10));
        let by_reference: &i64 = &7;
        assert_eq!(int("rate", by_reference), Ok(7));
        assert!(int("rate", 0u8).unwrap_err().to_string().contains("0 would stop every call"));
        assert!(int("rate", -3i32).unwrap_err().to_string().contains("-3 is negative"));
        assert_eq!(size("budget(bytes)", "4MiB"), Ok(4 << 20));
        assert_eq!(size("budget(bytes)", 512usize), Ok(512));
        assert!(size("budget(bytes)", "4 parsecs").unwrap_err().to_string().contains("is not a size"));
        assert_eq!(duration("budget(duration)", "1m 30s".to_string()), Ok(Duration::from_secs(90)));
        assert_eq!(duration("budget(duration)", Duration::from_millis(5)), Ok(Duration::from_millis(5)));
        assert!(duration("budget(idle)", "0s").unwrap_err().to_string().contains("zero duration"));
        assert!(duration("budget(idle)", "soon").unwrap_err().to_string().contains("`soon` is not a duration"));
    }

    #[test]
    fn equal_values_share_a_method_and_bad_ones_end_the_call() {
        static METHODS: Methods = Methods::new();
        let info = || MethodInfo::new("test.Keyed", "Get", RpcKind::Unary);
        let a = METHODS.get(1u64, info, |_| Ok(())).unwrap();
        let b = METHODS.get(2u64, info, |_| Ok(())).unwrap();
        let a_again = METHODS.get(1u64, info, |_| -> Result<(), BadOption> { panic!("built twice") }).unwrap();
        assert!(std::ptr::eq(a, a_again));
        assert!(!std::ptr::eq(a, b));
        let bad = METHODS.get(3u64, info, |_| Err::<(), _>(BadOption::new("rate", "no"))).map(drop).unwrap_err();
        assert_eq!(bad.code(), tonic::Code::Internal);
        assert!(bad.message().contains("/test.Keyed/Get"), "{}", bad.message());
        let again =
            METHODS.get(3u64, info, |_| -> Result<(), BadOption> { panic!("built twice") }).map(drop).unwrap_err();
        assert_eq!(again.message(), bad.message());
    }

    #[test]
    fn distinct_values_are_bounded() {
        static METHODS: Methods = Methods::new();
        let info = || MethodInfo::new("test.Many", "Get", RpcKind::Unary);
        for n in 0..MAX_PER_METHOD as u64 {
            METHODS.get(n, info, |_| Ok(())).unwrap();
        }
        let not_built = || -> MethodInfo { panic!("described past the bound (its names leaked on every call)") };
        let status = METHODS.get(u64::MAX, not_built, |_| Ok(())).map(drop).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().contains("more than 64 distinct values"), "{}", status.message());
        assert!(status.message().starts_with("/test.Many/Get: "), "{}", status.message());
    }
}
