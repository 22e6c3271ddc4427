//! Moving messages and items without a failed store forwarding:
//! [`take_message`], a message moved out of the item its stream returned,
//! eight bytes at a time; [`catch_item`], the item `Outbound` returns,
//! handed out of its panic catch sixteen bytes at a time.
//!
//! A stream returns its item through memory: `tonic::Streaming` writes it
//! field by field, with 8-byte stores, into its caller's slot, and the
//! wrapper then moves the message on into its own caller's slot. A plain
//! move is a `memcpy`, which LLVM makes of 16-byte loads; each such load
//! spans two of the 8-byte stores just made, so the CPU cannot take it from
//! its store buffer and waits for both stores to reach the cache (a failed
//! store forwarding, some 15 cycles). That wait, once in each wrapper, was
//! about half of what the wrappers cost per message on the bidi echo of
//! 64 streams (`benches/benches/scaling.rs`: 13 ns added per message with
//! a plain move, 7 ns with this one). Loads of the stores' own width
//! forward.
//!
//! The other way round at the end of the chain: tonic's encoder copies each
//! item `Outbound` gives it with 16-byte loads, so `Outbound` writes the
//! item in 16-byte stores, after reading it in the 8-byte words it was
//! written in. That took the wait out of the encoder (`benches/RESULTS.md`,
//! eighth round: bidi 16 B, 4 ns less per message, below raw tonic's own
//! wait there).

use std::{
    any::Any,
    marker::PhantomData,
    mem::{align_of, size_of, ManuallyDrop, MaybeUninit},
    task::Poll,
};

use tonic::Status;

use super::panic;

/// The message of `polled`, which must be `Ready(Some(Ok(message)))`,
/// moved out of it in 8-byte words when its layout allows (a size that is a
/// multiple of 8, and an alignment of at least 8: any message with a
/// pointer-sized field), and by a plain move otherwise.
#[inline(always)]
pub(crate) fn take_message<T>(polled: Poll<Option<Result<T, Status>>>) -> T {
    if size_of::<T>() % 8 != 0 || align_of::<T>() < 8 {
        let Poll::Ready(Some(Ok(message))) = polled else { unreachable!("a message") };
        return message;
    }
    // The item is forgotten: its message is moved out below, and the rest
    // of it holds nothing (the message is its only field).
    let polled = ManuallyDrop::new(polled);
    let Poll::Ready(Some(Ok(message))) = &*polled else { unreachable!("a message") };
    let from = (message as *const T).cast::<MaybeUninit<u64>>();
    let mut moved = MaybeUninit::<T>::uninit();
    let to = moved.as_mut_ptr().cast::<MaybeUninit<u64>>();
    // Volatile loads, so that LLVM keeps them 8 bytes wide instead of
    // merging them into a `memcpy`. Each word is read as `MaybeUninit`,
    // which any bytes are, padding included.
    for word in 0..size_of::<T>() / 8 {
        // SAFETY: I8: `from` and `to` are valid for `size_of::<T>()` bytes
        // and aligned to 8 (checked above): each word is in bounds, aligned.
        unsafe { to.add(word).write(from.add(word).read_volatile()) };
    }
    // SAFETY: I8: every byte of `moved` was copied from `message`, a valid
    // `T`, and `polled`, which held it, is never dropped: this is a move.
    unsafe { moved.assume_init() }
}

/// Runs `f` inside a panic catch (as [`panic::catch`]) for the item a
/// wrapper returns, or makes it with `caught` from the payload of a panic;
/// both get `state`. `f` hands its item to the [`ItemOut`] it gets, which
/// writes it where this function returns it from, and may write it 16
/// bytes at a time ([`ItemOut::put_wide`]). A closure's return value would
/// instead be copied out of the catch in 8-byte words, whatever its reader
/// loads.
///
/// `f` can only return normally with the [`Written`] that writing its
/// `ItemOut` gives: one per call, branded with the call's own lifetime, so
/// that none can be kept from another call.
#[inline(always)]
pub(crate) fn catch_item<S, I>(
    state: &mut S,
    f: impl for<'a> FnOnce(&mut S, ItemOut<'a, I>) -> Written<'a>,
    caught: impl FnOnce(&mut S, Box<dyn Any + Send>) -> I,
) -> I {
    let mut slot = MaybeUninit::<I>::uninit();
    match panic::catch(|| {
        f(state, ItemOut { slot: &mut slot, brand: PhantomData });
    }) {
        // SAFETY: I8: `f` returned, so it returned a `Written` of its own
        // `ItemOut`, which only `put` and `put_wide` make, after writing
        // the whole item to `slot`.
        Ok(()) => unsafe { slot.assume_init() },
        Err(payload) => caught(state, payload),
    }
}

/// Where [`catch_item`]'s closure puts its item: once, consumed by it.
pub(crate) struct ItemOut<'a, I> {
    slot: &'a mut MaybeUninit<I>,
    brand: Brand<'a>,
}

/// That an [`ItemOut`] was written.
pub(crate) struct Written<'a>(Brand<'a>);

/// Invariant in `'a`: a `Written` of one call cannot pass for another's.
type Brand<'a> = PhantomData<fn(&'a ()) -> &'a ()>;

impl<'a, I> ItemOut<'a, I> {
    /// Writes `item`, as the compiler moves it.
    #[inline(always)]
    pub(crate) fn put(self, item: I) -> Written<'a> {
        self.slot.write(item);
        Written(self.brand)
    }

    /// Writes `item` 16 bytes at a time, for a reader that loads it so:
    /// tonic's encoder copies each item it gets with 16-byte loads, and
    /// each such load that spans two 8-byte stores just made waits for
    /// them to reach the cache, while one that reads what one 16-byte store
    /// wrote takes it from the store buffer. The item is read in 8-byte
    /// words, as a stream that produced it wrote it, so the reads do not
    /// wait either. On x86-64, for an item whose size is a multiple of 8
    /// and whose alignment is at least 8 (any with a pointer-sized field);
    /// otherwise as [`put`](Self::put).
    #[inline(always)]
    pub(crate) fn put_wide(self, item: I) -> Written<'a> {
        #[cfg(target_arch = "x86_64")]
        if size_of::<I>() % 8 == 0 && align_of::<I>() >= 8 {
            sixteen_bytes_wide::move_wide(item, self.slot);
            return Written(self.brand);
        }
        self.put(item)
    }
}

#[cfg(target_arch = "x86_64")]
mod sixteen_bytes_wide {
    use std::{
        arch::x86_64::__m128i,
        mem::{size_of, ManuallyDrop, MaybeUninit},
    };

    /// 16 bytes, written at any alignment (`movups`).
    #[repr(C, packed)]
    struct Unaligned(MaybeUninit<__m128i>);

    /// `item` moved into `out`, read in 8-byte words and written in 16-byte
    /// ones, through `write_volatile`: LLVM would otherwise make the stores
    /// 8 bytes wide again. For an `I` whose size is a multiple of 8 and
    /// whose alignment is at least 8.
    #[inline(always)]
    pub(super) fn move_wide<I>(item: I, out: &mut MaybeUninit<I>) {
        // The bytes are moved below; the item is forgotten.
        let item = ManuallyDrop::new(item);
        let from = (&*item as *const I).cast::<MaybeUninit<u64>>();
        let to = out.as_mut_ptr().cast::<MaybeUninit<u64>>();
        let words = size_of::<I>() / 8;
        let mut word = 0;
        while word + 2 <= words {
            // Each word is read as a `MaybeUninit`, which any bytes are,
            // padding included, and so is the pair made of them.
            // SAFETY: I8: `from` and `to` are valid for `size_of::<I>()` bytes, aligned to 8 (the
            // caller checked): the two words at `word` are in bounds; `Unaligned` needs no alignment.
            unsafe {
                let pair: [MaybeUninit<u64>; 2] = [from.add(word).read_volatile(), from.add(word + 1).read_volatile()];
                let pair = std::mem::transmute::<[MaybeUninit<u64>; 2], MaybeUninit<__m128i>>(pair);
                to.add(word).cast::<Unaligned>().write_volatile(Unaligned(pair));
            }
            word += 2;
        }
        if word < words {
            // SAFETY: I8: the last word is in bounds and aligned to 8.
            unsafe { to.add(word).write_volatile(from.add(word).read_volatile()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_every_field() {
        let message = (String::from("payload"), 7u64, vec![1u8, 2, 3]);
        let moved = take_message(Poll::Ready(Some(Ok(message.clone()))));
        assert_eq!(moved, message);
    }

    type Item = Poll<Option<Result<(String, u64, Vec<u8>), Status>>>;

    fn an_item() -> Item {
        Poll::Ready(Some(Ok((String::from("payload"), 7, vec![1, 2, 3]))))
    }

    #[test]
    fn an_item_put_wide_is_moved_whole() {
        // 40 bytes: two 16-byte words and an 8-byte one.
        assert_eq!(size_of::<Item>() % 16, 8, "the test covers the last word");
        let item = catch_item(&mut (), |(), out| out.put_wide(an_item()), |(), _| unreachable!("no panic"));
        assert!(
            matches!(item, Poll::Ready(Some(Ok(message))) if message == (String::from("payload"), 7, vec![1, 2, 3]))
        );
        let small: Poll<Option<Result<u8, Status>>> =
            catch_item(&mut (), |(), out| out.put_wide(Poll::Ready(Some(Ok(5)))), |(), _| unreachable!());
        assert!(matches!(small, Poll::Ready(Some(Ok(5)))));
        // Padding (7 bytes after the `u8`) is moved as it is, never read as
        // an integer (`cargo miri test` checks it).
        let padded: Poll<Option<Result<(u8, u64), Status>>> =
            catch_item(&mut (), |(), out| out.put_wide(Poll::Ready(Some(Ok((1, 2))))), |(), _| unreachable!());
        assert!(matches!(padded, Poll::Ready(Some(Ok((1, 2))))));
    }

    #[test]
    fn an_item_put_or_a_panic_caught() {
        let put: Poll<Option<Result<i32, Status>>> =
            catch_item(&mut 1, |n, out| out.put(Poll::Ready(Some(Ok(*n)))), |_, _| Poll::Pending);
        assert!(matches!(put, Poll::Ready(Some(Ok(1)))));
        let caught = catch_item(
            &mut 2,
            |_, _out: ItemOut<'_, Poll<Option<Result<i32, Status>>>>| panic!("the inner stream panics"),
            |n, payload| Poll::Ready(Some(Ok(*n + i32::from(payload.is::<&str>())))),
        );
        assert!(matches!(caught, Poll::Ready(Some(Ok(3)))));
    }

    #[test]
    fn moves_small_messages_plainly() {
        assert_eq!(take_message(Poll::Ready(Some(Ok(5u32)))), 5);
        assert_eq!(take_message(Poll::Ready(Some(Ok(())))), ());
    }
}
