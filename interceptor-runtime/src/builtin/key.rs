//! Limits per client: what `key = ..` and `key_fn = ..` mean for `rate` and
//! `budget(streams = ..)`, and the bounded map that keeps one limit per key.
//!
//! - `key = peer`: the client's IP address (not its port: a client's many
//!   connections are one client).
//! - `key = metadata("x-api-key")`: the value of that request metadata (ASCII
//!   metadata; a `-bin` key cannot be a limit's key).
//! - `key_fn = path`: your own function of the call and its metadata,
//!   `fn(&CallContext, &MetadataMap) -> Option<String>` (a path to a function,
//!   or a closure that captures nothing from `self`). `None` is a call
//!   without a key.
//!
//! The key is read once per call, when it starts (`on_start`); the messages
//! of the call spend permits from their own counters, as without a key.
//!
//! # A call without the key
//! `on_missing_key` says what a call whose key is missing (no such metadata,
//! an empty value, no peer address, a key function that returned `None`)
//! gets: `invalid_argument` (the default), `unauthenticated`,
//! `permission_denied` or `failed_precondition` end it before the handler
//! runs, with a status that names what was missing (``rate: the call has no
//! `x-api-key` metadata, by which this method's limit is kept``); `share`
//! puts all such calls under one key of their own.
//!
//! # Memory
//! Keys are hashed to 128 bits with a key chosen at random per limit (so a
//! client cannot pick keys that collide with another's): a key of any length
//! takes the same room. The map keeps a key only while it means something:
//! a key is dropped once no call holds it and its state is at rest (a
//! rate's limiter is full again, so a fresh one would let exactly the same
//! messages through; a `streams` count is zero). Dropping it therefore loses
//! nothing. The map is swept when a new key comes in and the last sweep is a
//! second old (100 ms when the map is full), so idle keys go within about a
//! second of coming to rest.
//!
//! `max_keys` (default 100,000) caps the keys held at once. When the cap is
//! hit and the sweep frees nothing, a call with a **new** key is rejected
//! with RESOURCE_EXHAUSTED (calls of keys already held go on): the limits
//! of the clients being served are never forgotten, which evicting one
//! would do (its client would get a fresh burst, or twice its `streams`).
//! Filling the map takes `max_keys` clients each holding a call or spending
//! its rate at once; a key taken from unauthenticated metadata is a client's
//! own choice, so put the check that authenticates it before the limit.

use std::{
    borrow::Cow,
    fmt,
    hash::{BuildHasher, Hasher},
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
};

use dashmap::DashMap;
use tonic::{
    metadata::{Ascii, MetadataKey, MetadataMap},
    Code, Status,
};

use crate::engine::CallContext;

/// How a limit's key is read from a call: `key = peer` or
/// `key = metadata("x-api-key")`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// The client's IP address.
    Peer,
    /// The value of this request metadata (ASCII).
    Metadata(MetadataKey<Ascii>),
}

impl Key {
    /// `key = metadata(name)`: the name as gRPC allows it (lowercase letters,
    /// digits, `-`, `_` and `.`), not a `-bin` key.
    pub fn metadata(name: &str) -> Result<Key, String> {
        if let Some(why) = bad_metadata_key(name) {
            return Err(why);
        }
        MetadataKey::from_bytes(name.as_bytes())
            .map(Key::Metadata)
            .map_err(|_| format!("`{name}` is not a metadata key"))
    }
}

impl Key {
    /// `key = metadata("..")` with a literal, which the macro checked with
    /// [`bad_metadata_key`]'s rules (stricter than `MetadataKey`'s).
    #[doc(hidden)]
    pub fn checked_metadata(name: &'static str) -> Key {
        Key::Metadata(MetadataKey::from_static(name))
    }
}

/// Why `name` cannot key a limit, if it cannot (the macro checks a literal
/// with the same rules).
pub fn bad_metadata_key(name: &str) -> Option<String> {
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

/// `key_fn = path`: a function of the call and its metadata that returns
/// the call's key, or `None` when it has none.
///
/// ```
/// use interceptor_runtime::{key::KeyFn, CallContext};
/// use tonic::metadata::MetadataMap;
///
/// /// `tenant-7` from `authorization: Bearer tenant-7`.
/// fn tenant_of(_: &CallContext, metadata: &MetadataMap) -> Option<String> {
///     metadata.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ").map(str::to_string)
/// }
///
/// // What `#[intercept(rate(recv = 100, key_fn = tenant_of))]` builds.
/// let key = KeyFn::new("tenant_of", tenant_of);
/// ```
#[derive(Clone)]
pub struct KeyFn {
    name: &'static str,
    #[allow(clippy::type_complexity)]
    f: Arc<dyn Fn(&CallContext, &MetadataMap) -> Option<String> + Send + Sync>,
}

impl KeyFn {
    /// `f`, named `name` in the status of a call it finds no key for.
    pub fn new(
        name: &'static str,
        f: impl Fn(&CallContext, &MetadataMap) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        KeyFn { name, f: Arc::new(f) }
    }
}

impl fmt::Debug for KeyFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyFn").field(&self.name).finish()
    }
}

/// What a call whose key is missing gets (`on_missing_key = ..`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingKey {
    /// Ends with INVALID_ARGUMENT, naming what is missing (the default).
    #[default]
    InvalidArgument,
    /// Ends with UNAUTHENTICATED.
    Unauthenticated,
    /// Ends with PERMISSION_DENIED.
    PermissionDenied,
    /// Ends with FAILED_PRECONDITION.
    FailedPrecondition,
    /// Goes on, under one key that all calls without a key share.
    Share,
}

/// The most keys a limit holds at once, unless `max_keys` says otherwise.
pub const DEFAULT_MAX_KEYS: u64 = 100_000;

/// Where a call's key comes from, and what a call without one gets.
#[derive(Clone, Debug)]
pub(crate) struct Keying {
    source: Source,
    missing: MissingKey,
    /// `rate` or `budget`, in statuses.
    limit: &'static str,
}

#[derive(Clone, Debug)]
enum Source {
    Peer,
    Metadata(MetadataKey<Ascii>),
    Function(KeyFn),
}

/// A call's key, as read from it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CallKey<'a> {
    Ip(IpAddr),
    Text(Cow<'a, [u8]>),
    /// The key of the calls without one (`on_missing_key = share`).
    Shared,
}

impl Keying {
    /// The keying `key` or `key_fn` describe (`key_fn` wins if both are
    /// given), if any.
    pub(crate) fn new(
        limit: &'static str,
        key: Option<&Key>,
        key_fn: Option<&KeyFn>,
        missing: MissingKey,
    ) -> Option<Keying> {
        let source = match (key_fn, key) {
            (Some(f), _) => Source::Function(f.clone()),
            (None, Some(Key::Peer)) => Source::Peer,
            (None, Some(Key::Metadata(name))) => Source::Metadata(name.clone()),
            (None, None) => return None,
        };
        Some(Keying { source, missing, limit })
    }

    /// The call's key, or the status that ends a call without one.
    pub(crate) fn key_of<'a>(&self, ctx: &CallContext, metadata: &'a MetadataMap) -> Result<CallKey<'a>, Status> {
        let found = match &self.source {
            Source::Peer => ctx.peer().map(|addr| CallKey::Ip(addr.ip().to_canonical())),
            Source::Metadata(name) => metadata
                .get(name)
                .map(|value| value.as_bytes())
                .filter(|bytes| !bytes.is_empty())
                .map(|bytes| CallKey::Text(Cow::Borrowed(bytes))),
            Source::Function(f) => (f.f)(ctx, metadata).map(|key| CallKey::Text(Cow::Owned(key.into_bytes()))),
        };
        match (found, self.missing) {
            (Some(key), _) => Ok(key),
            (None, MissingKey::Share) => Ok(CallKey::Shared),
            (None, missing) => Err(self.missing_status(missing)),
        }
    }

    #[cold]
    fn missing_status(&self, missing: MissingKey) -> Status {
        let limit = self.limit;
        let message = match &self.source {
            Source::Peer => {
                format!("{limit}: the client's address is unknown, and this method's limit is kept per address")
            }
            Source::Metadata(name) => {
                format!("{limit}: the call has no `{name}` metadata, by which this method's limit is kept")
            }
            Source::Function(f) => format!("{limit}: the key function `{}` found no key for the call", f.name),
        };
        let code = match missing {
            MissingKey::Unauthenticated => Code::Unauthenticated,
            MissingKey::PermissionDenied => Code::PermissionDenied,
            MissingKey::FailedPrecondition => Code::FailedPrecondition,
            MissingKey::InvalidArgument | MissingKey::Share => Code::InvalidArgument,
        };
        Status::new(code, message)
    }
}

impl CallKey<'_> {
    /// The key as text for a store shared by servers: what it was, when it
    /// is short printable text, else its SHA-1 (hex), so that every server
    /// names a key alike, whatever its length.
    #[cfg(feature = "rate")]
    pub(crate) fn to_shared_name(&self) -> String {
        match self {
            CallKey::Ip(ip) => ip.to_string(),
            CallKey::Shared => "*".to_string(),
            CallKey::Text(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) if text.len() <= 64 && text.bytes().all(|b| b.is_ascii_graphic()) => format!("={text}"),
                _ => format!("#{}", sha1_smol::Sha1::from(&bytes[..]).digest()),
            },
        }
    }
}

/// Hashes keys to 128 bits, with two random keys of std's SipHash.
pub(crate) struct KeyHasher([std::collections::hash_map::RandomState; 2]);

impl KeyHasher {
    pub(crate) fn new() -> Self {
        KeyHasher([Default::default(), Default::default()])
    }

    pub(crate) fn hash(&self, key: &CallKey<'_>) -> u128 {
        let half = |state: &std::collections::hash_map::RandomState| {
            let mut h = state.build_hasher();
            match key {
                CallKey::Ip(IpAddr::V4(ip)) => h.write(&ip.octets()),
                CallKey::Ip(IpAddr::V6(ip)) => h.write(&ip.octets()),
                CallKey::Text(bytes) => h.write(bytes),
                CallKey::Shared => {}
            }
            // Which kind of key it was, so that no text collides with an
            // address or the shared key.
            h.write_u8(match key {
                CallKey::Ip(_) => 1,
                CallKey::Text(_) => 2,
                CallKey::Shared => 3,
            });
            h.finish()
        };
        (u128::from(half(&self.0[0])) << 64) | u128::from(half(&self.0[1]))
    }
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher")
    }
}

/// What a key holds, and whether that can be forgotten.
pub(crate) trait KeyState: Send + Sync + 'static {
    /// Whether the state is what a fresh one would be at `now` (tokio's
    /// clock, as [`gcra::now`](super::rate) counts it), so that dropping it
    /// loses nothing.
    fn at_rest(&self, now: u64) -> bool;
}

/// The keys of one limit: a bounded map from a key's hash to its state.
/// See the [module docs](self) for when a key is dropped and what the cap
/// does.
pub(crate) struct KeyedMap<V> {
    map: DashMap<u128, Arc<V>>,
    hasher: KeyHasher,
    max: usize,
    /// When the map was last swept ([`tokio::time::Instant`] as nanoseconds
    /// of the rate engine's clock).
    swept: AtomicU64,
}

/// A sweep at most this often while the map has room...
const SWEEP_EVERY: u64 = 1_000_000_000;
/// ... and this often once it is full.
const SWEEP_FULL_EVERY: u64 = 100_000_000;

impl<V: KeyState> KeyedMap<V> {
    pub(crate) fn new(max_keys: Option<u64>) -> Self {
        let max = max_keys.unwrap_or(DEFAULT_MAX_KEYS).clamp(1, usize::MAX as u64) as usize;
        KeyedMap { map: DashMap::new(), hasher: KeyHasher::new(), max, swept: AtomicU64::new(0) }
    }

    /// The state of `key`, made by `fresh` if the map has none; `None` when
    /// the key is new and the map is full of keys in use.
    pub(crate) fn get(&self, key: &CallKey<'_>, now: u64, fresh: impl FnOnce() -> V) -> Option<Arc<V>> {
        let hash = self.hasher.hash(key);
        if let Some(state) = self.map.get(&hash) {
            return Some(state.clone());
        }
        let len = self.map.len();
        let full = len >= self.max;
        let last = self.swept.load(Relaxed);
        let every = if full { SWEEP_FULL_EVERY } else { SWEEP_EVERY };
        // One caller sweeps; the others go on.
        if now.saturating_sub(last) >= every && self.swept.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
            self.sweep(now);
        }
        if full && self.map.len() >= self.max {
            return None;
        }
        Some(self.map.entry(hash).or_insert_with(|| Arc::new(fresh())).clone())
    }

    /// Drops every key that no call holds and whose state is at rest.
    pub(crate) fn sweep(&self, now: u64) {
        // Under the shard's write lock: no call can take the key meanwhile.
        self.map.retain(|_, state| Arc::strong_count(state) > 1 || !state.at_rest(now));
    }

    /// Keys held now.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The cap.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

impl<V> fmt::Debug for KeyedMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedMap").field("keys", &self.map.len()).field("max", &self.max).finish()
    }
}

/// Nanoseconds on tokio's clock, for a map whose states ignore the time
/// (a rate passes its engine's clock instead, which its states compare).
#[cfg(feature = "budget")]
pub(crate) fn now() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    let elapsed = tokio::time::Instant::now().into_std().saturating_duration_since(origin);
    // Never 0, which the map reads as "never swept".
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).saturating_add(SWEEP_EVERY)
}

/// RESOURCE_EXHAUSTED for a new key when the map is full.
#[cold]
pub(crate) fn too_many_keys(limit: &'static str, max: usize) -> Status {
    Status::resource_exhausted(format!(
        "{limit}: limits for {max} keys are in use (max_keys), none of them idle; a new key must wait for one to end"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Count(AtomicU64);
    impl KeyState for Count {
        fn at_rest(&self, _: u64) -> bool {
            self.0.load(Relaxed) == 0
        }
    }

    fn text(s: &str) -> CallKey<'_> {
        CallKey::Text(Cow::Borrowed(s.as_bytes()))
    }

    #[test]
    fn metadata_keys_are_checked() {
        assert!(Key::metadata("x-api-key").is_ok());
        assert!(bad_metadata_key("X-Api-Key").unwrap().contains("write \"x-api-key\""));
        assert!(bad_metadata_key("token-bin").unwrap().contains("binary"));
        assert!(bad_metadata_key("").unwrap().contains("empty"));
        assert!(bad_metadata_key("a b").unwrap().contains("` ` is not allowed"));
    }

    #[test]
    fn keys_at_rest_and_unheld_are_dropped_and_the_cap_holds() {
        let map = KeyedMap::<Count>::new(Some(2));
        let a = map.get(&text("a"), 0, || Count(AtomicU64::new(1))).unwrap();
        let b = map.get(&text("b"), 0, || Count(AtomicU64::new(0))).unwrap();
        // Full; `a` is held and busy, `b` held: a new key waits.
        assert!(map.get(&text("c"), SWEEP_FULL_EVERY, || Count(AtomicU64::new(0))).is_none());
        // Keys already held go on.
        assert!(Arc::ptr_eq(&map.get(&text("a"), SWEEP_FULL_EVERY, || unreachable!()).unwrap(), &a));
        drop(b);
        // `b` is no longer held and at rest: the next sweep drops it.
        assert!(map.get(&text("c"), 2 * SWEEP_FULL_EVERY, || Count(AtomicU64::new(0))).is_some());
        assert_eq!(map.len(), 2);
        a.0.store(0, Relaxed);
        drop(a);
        map.sweep(0);
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn kinds_of_key_do_not_collide() {
        let hasher = KeyHasher::new();
        let ip = CallKey::Ip("127.0.0.1".parse().unwrap());
        let same_bytes = CallKey::Text(Cow::Owned(vec![127, 0, 0, 1]));
        assert_ne!(hasher.hash(&ip), hasher.hash(&same_bytes));
        assert_ne!(hasher.hash(&CallKey::Shared), hasher.hash(&text("")));
        assert_eq!(hasher.hash(&text("alice")), hasher.hash(&CallKey::Text(Cow::Owned(b"alice".to_vec()))));
    }
}
