//! [`take_message`]: a message moved out of the item its stream returned,
//! eight bytes at a time.
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

use std::{
    mem::{align_of, size_of, ManuallyDrop, MaybeUninit},
    task::Poll,
};

use tonic::Status;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_every_field() {
        let message = (String::from("payload"), 7u64, vec![1u8, 2, 3]);
        let moved = take_message(Poll::Ready(Some(Ok(message.clone()))));
        assert_eq!(moved, message);
    }

    #[test]
    fn moves_small_messages_plainly() {
        assert_eq!(take_message(Poll::Ready(Some(Ok(5u32)))), 5);
        assert_eq!(take_message(Poll::Ready(Some(Ok(())))), ());
    }
}
